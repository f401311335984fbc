/* A fast Modbus TCP server for bench/modbus.py: libmodbus, one select() loop, many ports.
 *
 * Every unit id is answered from one register map (input and holding registers 0..999 hold
 * float32 values in ABCD order), so the gateway, not this server, is the bottleneck.
 * Usage: modbus_server PORT [PORT ...]
 */
#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#define MAX_PORTS 64

int main(int argc, char **argv) {
    int nports = argc - 1;
    if (nports < 1 || nports > MAX_PORTS) {
        fprintf(stderr, "usage: %s PORT [PORT ...] (at most %d)\n", argv[0], MAX_PORTS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    modbus_mapping_t *map = modbus_mapping_new(0, 0, 1000, 1000);
    for (int i = 0; i + 1 < 1000; i += 2) {
        /* Big-endian float32, high word first (written by hand: the modbus_set_float_* helpers
         * of some libmodbus releases swap bytes). */
        float v = 200.0f + (float)(i % 50);
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        map->tab_registers[i] = map->tab_input_registers[i] = (uint16_t)(bits >> 16);
        map->tab_registers[i + 1] = map->tab_input_registers[i + 1] = (uint16_t)(bits & 0xFFFF);
    }
    modbus_t *ctx[MAX_PORTS];
    int listen_fd[MAX_PORTS];
    fd_set all;
    FD_ZERO(&all);
    int maxfd = 0;
    for (int p = 0; p < nports; p++) {
        ctx[p] = modbus_new_tcp("127.0.0.1", atoi(argv[p + 1]));
        listen_fd[p] = modbus_tcp_listen(ctx[p], 64);
        if (listen_fd[p] < 0) {
            fprintf(stderr, "cannot listen on %s: %s\n", argv[p + 1], modbus_strerror(errno));
            return 1;
        }
        FD_SET(listen_fd[p], &all);
        if (listen_fd[p] > maxfd) maxfd = listen_fd[p];
    }
    /* Any context can serve any socket: they differ only in the port they listened on. */
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        fd_set ready = all;
        if (select(maxfd + 1, &ready, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) continue;
            perror("select");
            return 1;
        }
        for (int fd = 0; fd <= maxfd; fd++) {
            if (!FD_ISSET(fd, &ready)) continue;
            int p;
            for (p = 0; p < nports; p++)
                if (listen_fd[p] == fd) break;
            if (p < nports) {
                int c = accept(fd, NULL, NULL);
                if (c >= 0) {
                    FD_SET(c, &all);
                    if (c > maxfd) maxfd = c;
                }
                continue;
            }
            modbus_set_socket(ctx[0], fd);
            int rc = modbus_receive(ctx[0], query);
            if (rc > 0) {
                modbus_reply(ctx[0], query, rc, map);
            } else if (rc == -1) {
                close(fd);
                FD_CLR(fd, &all);
            }
        }
    }
}
