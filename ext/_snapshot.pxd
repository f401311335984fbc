# The compiled snapshot codec's functions, for the kernel to cimport (ext/_snapshot.pyx).

from ext._state cimport Acc, Blk, Cold, Point, Rec, Tables

cdef bytes encode(const Tables* t, list keys, dict revisable)
cdef list walk(const unsigned char* buf, Py_ssize_t n, Py_ssize_t count, int nk, int nper)
cdef double cstart_at(const unsigned char* buf, Py_ssize_t at) noexcept nogil
cdef const unsigned char* get_point(const unsigned char* r, Point* st, Cold* cd, Acc* wins,
                                    double* wper, int nk, int nper) noexcept nogil
cdef const unsigned char* get_count(const unsigned char* r, Py_ssize_t* m) noexcept nogil
cdef const unsigned char* get_rec(const unsigned char* p, Rec* r, double* per,
                                  int nper) noexcept nogil
cdef const unsigned char* get_block(const unsigned char* r, Blk* b) noexcept nogil
