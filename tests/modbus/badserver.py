"""A Modbus TCP (or RTU over TCP) server that answers each request as badly as a test asks.

Raw asyncio sockets, frames built by hand, so an answer can be wrong in exactly one way: byte
count, transaction id, unit id, function code, length, CRC, an exception code, lateness,
random bytes, or silence. Every request is recorded (time, unit, function, address, count),
and every connection accepted is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from dataclasses import dataclass, field

from gateway.sim.ports import free_port

__all__ = ["MODES", "BadServer", "Request", "crc16"]

# What the server does with a read request. "exception:N" answers exception code N (1..11).
MODES = (
    "good",
    "byte_count_short",  # byte count one register short of the data that follows
    "byte_count_long",  # byte count larger than the data that follows
    "extra_registers",  # more registers than asked, consistently framed
    "wrong_tid",  # a well-formed answer with another transaction id
    "truncated",  # the header announces the whole frame, the tail never comes
    "truncated_header",  # 5 bytes: not even a whole MBAP header
    "other_unit",  # a well-formed answer from another unit id
    "wrong_function",  # a well-formed answer of another function code (FC04 for FC03)
    "late",  # the right answer, 10 x the client's timeout later
    "random",  # random bytes
    "random_pdu",  # a right MBAP header around a random PDU
    "mute",  # accepts the connection, reads, never answers
    "bad_crc",  # RTU framing only: the right answer with a broken CRC
)

GARBAGE = 0xBEEF  # register value of every malformed answer: must never be credited


def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC, low byte first as on the wire."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


@dataclass(frozen=True, slots=True)
class Request:
    at: float  # monotonic
    tid: int
    unit: int
    function: int
    address: int
    count: int


@dataclass
class BadServer:
    """`async with BadServer(registers={0: 0x4499, ...}) as s:` then set `s.mode` any time."""

    registers: dict[int, int] = field(default_factory=dict)  # holding and input alike
    bits: dict[int, bool] = field(default_factory=dict)  # coils and discrete inputs alike
    rtu: bool = False  # RTU framing (unit, PDU, CRC) over the TCP stream instead of MBAP
    mode: str = "good"
    late_by: float = 2.0  # seconds, for mode "late"
    units: tuple[int, ...] = (1,)  # units that answer (others: silence, as on a bus)
    mode_of_unit: dict[int, str] = field(default_factory=dict)  # overrides `mode` per unit
    seed: int = 17
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    connections: int = 0  # accepted so far
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _rng: random.Random = field(default_factory=random.Random)

    async def start(self) -> None:
        self._rng.seed(self.seed)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Close the listener and every connection, and wait until their handlers are done."""
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            for t in list(self._tasks):
                t.cancel()
            # Handlers end on their own once their connection is closed (a cancelled one would
            # make asyncio's stream callback log a CancelledError).
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=2.0)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> BadServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def requests_to(self, unit: int) -> list[Request]:
        return [r for r in self.requests if r.unit == unit]

    # ---- the connection -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            while True:
                if self.rtu:
                    raw = await reader.readexactly(8)
                    tid, (unit, fc, address, count) = 0, struct.unpack(">BBHH", raw[:6])
                else:
                    head = await reader.readexactly(7)
                    tid, _pid, length, unit = struct.unpack(">HHHB", head)
                    pdu = await reader.readexactly(length - 1)
                    fc, address, count = struct.unpack(">BHH", pdu[:5])
                self.requests.append(Request(time.monotonic(), tid, unit, fc, address, count))
                if unit not in self.units:
                    continue
                answer = self._answer(self.mode_of_unit.get(unit, self.mode), tid, unit, fc,
                                      address, count)  # fmt: skip
                if answer is None:
                    continue
                delay, data = answer
                if delay:
                    self._later(writer, delay, data)
                else:
                    writer.write(data)
        except (asyncio.IncompleteReadError, ConnectionError, struct.error):
            pass
        finally:
            self._writers.discard(writer)
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()

    def _later(self, writer: asyncio.StreamWriter, delay: float, data: bytes) -> None:
        async def send() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(ConnectionError, RuntimeError):
                if not writer.is_closing():
                    writer.write(data)

        task = asyncio.create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- what goes back -----------------------------------------------------------------

    def _values(self, fc: int, address: int, count: int, garbage: bool) -> bytes:
        if fc in (1, 2):
            bits = [(not garbage) and self.bits.get(address + i, False) for i in range(count)]
            packed = bytearray((count + 7) // 8)
            for i, b in enumerate(bits):
                if b:
                    packed[i // 8] |= 1 << (i % 8)
            return bytes(packed)
        regs = [GARBAGE if garbage else self.registers.get(address + i, 0) for i in range(count)]
        return struct.pack(f">{count}H", *regs)

    def _frame(self, tid: int, unit: int, pdu: bytes) -> bytes:
        if self.rtu:
            body = bytes([unit]) + pdu
            return body + crc16(body)
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu

    def _answer(
        self, mode: str, tid: int, unit: int, fc: int, address: int, count: int
    ) -> tuple[float, bytes] | None:
        """(delay, bytes to send) for one read request in `mode`; None for silence."""
        if mode == "mute":
            return None
        if mode == "good":
            good = self._values(fc, address, count, garbage=False)
            return 0.0, self._frame(tid, unit, bytes([fc, len(good)]) + good)
        if mode.startswith("exception:"):
            return 0.0, self._frame(tid, unit, bytes([fc | 0x80, int(mode.split(":")[1])]))
        if mode == "random":
            return 0.0, self._rng.randbytes(self._rng.randint(1, 40))
        if mode == "random_pdu":
            return 0.0, self._frame(tid, unit, self._rng.randbytes(self._rng.randint(1, 12)))
        # The rest carry GARBAGE registers: whatever a client makes of them must not be good.
        bad = self._values(fc, address, count, garbage=True)
        if mode == "late":
            return self.late_by, self._frame(tid, unit, bytes([fc, len(bad)]) + bad)
        if mode == "extra_registers":
            more = self._values(fc, address, count + 16, garbage=True)
            return 0.0, self._frame(tid, unit, bytes([fc, len(more)]) + more)
        return 0.0, self._malformed(mode, tid, unit, fc, bad)

    def _malformed(self, mode: str, tid: int, unit: int, fc: int, bad: bytes) -> bytes:
        """An answer to (tid, unit, fc) carrying `bad`, wrong in the one way `mode` names."""
        pdu = bytes([fc, len(bad)]) + bad
        if mode == "byte_count_short":
            return self._frame(tid, unit, bytes([fc, len(bad) - (1 if fc in (1, 2) else 2)]) + bad)
        if mode == "byte_count_long":
            return self._frame(tid, unit, bytes([fc, len(bad) + 4]) + bad)
        if mode == "wrong_tid":
            return self._frame((tid + 1000) % 65536 or 1, unit, pdu)
        if mode == "truncated":
            return self._frame(tid, unit, pdu)[:-3]
        if mode == "truncated_header":
            return self._frame(tid, unit, pdu)[:5]
        if mode == "other_unit":
            return self._frame(tid, (unit % 247) + 1, pdu)
        if mode == "wrong_function":
            other = {1: 2, 2: 1, 3: 4, 4: 3}.get(fc, 3)
            return self._frame(tid, unit, bytes([other, len(bad)]) + bad)
        if mode == "bad_crc":
            data = self._frame(tid, unit, pdu)
            return data[:-2] + bytes([data[-2] ^ 0xFF, data[-1]])
        raise ValueError(f"unknown mode {mode!r}")
