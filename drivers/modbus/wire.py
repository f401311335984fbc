"""What came back on the wire: a guard on a pymodbus client's receive path, and its description.

pymodbus 3.16 parses answers inside asyncio's `data_received`: a frame it cannot decode raises
there (asyncio logs a traceback and drops the connection), and a stray frame is skipped with an
ERROR line naming neither device nor request. The guard keeps the bytes that came back while a
request is in flight, keeps pymodbus's complaints about them off the log (the link reports the
failure itself and explains those bytes), and fails the request at once when its answer cannot
be decoded.

It also decodes the answers to the four read functions without pymodbus's debug line, whose
argument (`str(pdu)`, every register) pymodbus builds before it asks whether DEBUG is on:
~1.8 % of the event loop otherwise (see `_quiet_decode`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

from drivers.errors import DriverError
from drivers.modbus.points import BIT_FUNCTIONS, FUNCTION_CODES

__all__ = ["BadAnswer", "Wire", "explain", "take_connect_failure"]

_SHOWN = 24  # bytes of a bad answer quoted in the error
_KEPT = 260  # bytes kept per request (a Modbus frame is at most 260)
_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")  # the logger of pymodbus's `Log`

# The guard whose receive path is running now. One event loop per thread and the receive path
# never awaits, so a module slot is enough to tell whose answer a pymodbus log line is about.
_current: Wire | None = None
# Why pymodbus's connect() returned False, by the task that called it (see take_connect_failure).
_connect_failures: dict[int, str] = {}
# Client-side lines about states the link reports itself (a device down, a lost link).
_CLIENT_LINES = ("Not connected, trying to connect!", "Cancel send, because not connected!")


def take_connect_failure() -> str | None:
    """pymodbus's reason for the failed connect() this task just awaited ("[Errno 111] ...").

    Its connect() logs the OSError and returns False; the filter below keeps that line off the
    log and leaves the reason here for the link's own message. Call it from the task that
    awaited connect() directly (not through wait_for, which runs it in a task of its own).
    None when pymodbus logged nothing: it says an identical line only once in a row, so the
    caller keeps the reason it got last time ("" is a timeout).
    """
    task = _task()
    return _connect_failures.pop(task, None) if task else None


def _task() -> int:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a sync client
        return 0
    return id(task) if task is not None else 0


class BadAnswer(DriverError):
    """The answer to the request in flight could not be decoded (set into pymodbus's future)."""


class Wire:
    """Installed on one pymodbus async client by `Wire.install(client)`; `arm()` per request."""

    __slots__ = ("_ctx", "_receive", "armed", "rtu", "rx")

    def __init__(self, ctx: Any, receive: Any, *, rtu: bool) -> None:
        self._ctx = ctx
        self._receive = receive
        self.rtu = rtu
        self.armed = False
        self.rx = bytearray()  # what came back since arm()

    @classmethod
    def install(cls, client: Any) -> Wire | None:
        """Guard the client's receive path; None for a client without one (a test double)."""
        ctx = getattr(client, "ctx", None)
        receive = getattr(ctx, "datagram_received", None)
        if ctx is None or receive is None or not hasattr(ctx, "response_future"):
            return None
        framer = getattr(ctx, "framer", None)
        wire = cls(ctx, receive, rtu=type(framer).__name__ == "FramerRTU")
        # data_received calls self.datagram_received: an instance attribute takes precedence.
        ctx.datagram_received = wire._received
        decoder = getattr(framer, "decoder", None)
        if decoder is not None and hasattr(decoder, "pdu_table"):
            decoder.decode = _quiet_decode(decoder)  # the same: an instance attribute
        return wire

    def arm(self) -> None:
        """A request is about to be sent: what comes back from now on is its answer."""
        self.armed = True
        if self.rx:
            self.rx.clear()

    def disarm(self) -> None:
        self.armed = False

    @property
    def transaction_id(self) -> int:
        return int(getattr(self._ctx, "request_transaction_id", 0) or 0)

    def _received(self, data: bytes, addr: Any = None) -> None:
        global _current
        if len(self.rx) < _KEPT:
            self.rx += data[: _KEPT - len(self.rx)]
        _current = self
        try:
            self._receive(data, addr)
        except Exception as exc:  # raised by pymodbus's framer: never let it reach asyncio
            self._ctx.recv_buffer = b""  # resynchronise on the next answer
            future = self._ctx.response_future
            if self.armed and not future.done():
                future.set_exception(BadAnswer(str(exc)))
        finally:
            _current = None

    def byte_count(self, unit: int, function_code: int) -> int | None:
        """The byte count the accepted answer declared (None: not found in what came back).

        pymodbus unpacks every data byte of a bit read whatever its byte count says; the link
        asks here to refuse an answer whose count and data disagree.
        """
        raw = bytes(self.rx)
        if self.rtu:
            ok = len(raw) > 2 and raw[0] == unit and raw[1] == function_code
            return raw[2] if ok else None
        tid = self.transaction_id
        pos = 0
        while len(raw) - pos >= 9:
            t, _pid, length, u = struct.unpack_from(">HHHB", raw, pos)
            if (not tid or not t or t == tid) and u == unit and raw[pos + 7] == function_code:
                return raw[pos + 8]
            pos += 6 + max(length, 2)
        return None

    def describe(self, unit: int, function: str, count: int) -> str:
        """What came back for the request in flight, for its error message ("" if nothing)."""
        if not self.rx:
            return ""
        raw = bytes(self.rx)
        tid = 0 if self.rtu else self.transaction_id
        return explain(raw, unit, function, count, tid=tid, rtu=self.rtu)


def _quiet_decode(decoder: Any) -> Callable[[bytes], Any]:
    """`decoder.decode` (pymodbus's DecodePDU) without its debug line for read answers.

    pymodbus 3.16 ends every decode with `Log.debug("decoded PDU ... -> {} ", ..., str(pdu))`:
    the PDU is rendered (class, ids, every bit and register) before `Log.debug` asks whether
    DEBUG is on, once per answer. An answer of function 1-4 is decoded here by the same
    pymodbus class, and nothing is rendered; anything else, any answer that does not decode
    (pymodbus's warning and its None, as before) and every answer while pymodbus's logger is
    at DEBUG go to pymodbus's own `decode`.
    """
    original: Callable[[bytes], Any] = decoder.decode
    classes: dict[int, Any] = {}
    for code in FUNCTION_CODES.values():
        entry = decoder.pdu_table.get(code)
        pdu_class = entry[decoder.pdu_inx] if entry else None
        if pdu_class is not None and getattr(pdu_class, "sub_function_code", -1) < 0:
            classes[code] = pdu_class
    debug = _PYMODBUS_LOG.isEnabledFor  # cached by logging until a level changes

    def decode(frame: bytes) -> Any:
        pdu_class = classes.get(frame[0]) if frame else None
        if pdu_class is None or debug(logging.DEBUG):
            return original(frame)
        pdu = pdu_class()
        try:
            pdu.decode(frame[1:])
        except Exception:  # whatever pymodbus makes of it: its warning, its None
            return original(frame)
        return pdu

    return decode


def explain(raw: bytes, unit: int, function: str, count: int, *, tid: int, rtu: bool) -> str:
    """Say what is wrong with `raw` as the answer to one read request, and quote it."""
    what = (
        _explain_rtu(raw, unit, function, count)
        if rtu
        else _explain_mbap(raw, tid, unit, function, count)
    )
    shown = raw[:_SHOWN].hex(" ") + (" ..." if len(raw) > _SHOWN else "")
    return f"{what} ({len(raw)} bytes: {shown})"


def _explain_mbap(raw: bytes, tid: int, unit: int, function: str, count: int) -> str:
    found: list[str] = []
    pos = 0
    while pos < len(raw) and len(found) < 3:
        frame = raw[pos:]
        if len(frame) < 8:
            found.append(f"a truncated frame ({len(frame)} bytes, less than an MBAP header)")
            break
        t, pid, length, u = struct.unpack_from(">HHHB", frame)
        if pid != 0:
            found.append(f"bytes that are not Modbus TCP (protocol id {pid:#06x}, not 0)")
            break
        end = 6 + length
        if len(frame) < end:
            found.append(f"a truncated frame (its header announces {end} bytes, {len(frame)} came)")
            break
        found.append(_explain_pdu(frame[7:end], t, tid, u, unit, function, count))
        pos += end
    return "; then ".join(found)


def _explain_rtu(raw: bytes, unit: int, function: str, count: int) -> str:
    if len(raw) < 5:
        return f"a truncated frame ({len(raw)} bytes)"
    if _crc16(raw[:-2]) != raw[-2:]:
        return "a frame with a bad CRC (noise on the line, or two frames run together)"
    return _explain_pdu(raw[1:-2], 0, 0, raw[0], unit, function, count)


def _explain_pdu(pdu: bytes, t: int, tid: int, u: int, unit: int, function: str, count: int) -> str:
    fc = FUNCTION_CODES.get(function, 0)
    if tid and t and t != tid:
        return f"an answer with transaction id {t} to request {tid} (late, or for another request)"
    if unit and u != unit:
        return f"an answer from unit {u}, not {unit}"
    if not pdu:
        return "an empty answer"
    if pdu[0] & 0x80:
        if len(pdu) < 2:
            return "an exception answer without its code"
        if pdu[0] & 0x7F != fc:
            return f"exception {pdu[1]} for function {pdu[0] & 0x7F}, not {fc}"
        return f"exception {pdu[1]}"
    if pdu[0] != fc:
        return f"an answer of function {pdu[0]} to a request of function {fc}"
    bits = function in BIT_FUNCTIONS
    expected = (count + 7) // 8 if bits else 2 * count
    unit_name = "bits" if bits else "registers"
    got = pdu[1] if len(pdu) > 1 else None
    if got != expected or len(pdu) - 2 != expected:
        return (
            f"an answer with byte count {got} and {max(0, len(pdu) - 2)} data bytes "
            f"({expected} expected for {count} {unit_name})"
        )
    return "a well-formed answer"


def _crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


class _PymodbusNoise(logging.Filter):
    """Keeps pymodbus's client-side complaints off the log; the link reports them instead.

    Lines logged while a guarded receive path runs are about an answer the link describes
    itself when it reports the request's failure (Wire.describe). "Failed to connect" becomes
    the reason in the link's own "cannot open" message (take_connect_failure). "No response
    received after N retries" (the client's timeout) and "not connected" lines are dropped: the
    link reports each missed reply and lost connection itself, with the device and a hint.
    """

    def __init__(self) -> None:
        super().__init__()
        self._dropped = False
        self._connect_reason: str | None = None  # of the last connect failure dropped

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if _current is not None:
            self._dropped = True
            return False
        if text.startswith("Failed to connect "):
            self._connect_reason = text.removeprefix("Failed to connect ").splitlines()[0]
            self._note_connect_failure()
            self._dropped = True
            return False
        if text.startswith("Repeating....") and self._dropped and self._connect_reason is not None:
            self._note_connect_failure()  # the same failure again, from another link maybe
            return False
        self._connect_reason = None
        if text.startswith(_CLIENT_LINES) or text.startswith("No response received after"):
            self._dropped = True
            return False
        if text.startswith("Repeating....") and self._dropped:
            # pymodbus's marker for a repeat of the line dropped above (with its last frames
            # appended when its logger is not at DEBUG)
            return False
        self._dropped = False
        return True

    def _note_connect_failure(self) -> None:
        task = _task()
        if task and self._connect_reason is not None:
            if len(_connect_failures) > 64:  # left by clients used outside a Link
                _connect_failures.clear()
            _connect_failures[task] = self._connect_reason


_PYMODBUS_LOG.addFilter(_PymodbusNoise())
