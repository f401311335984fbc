"""One Modbus link (a TCP connection or a serial line) shared by every unit id behind it.

Requests on a link are serialized by one asyncio.Lock; the link connects, times out and
reconnects with our own backoff, so device state and events stay ours (see docs/modbus.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.base import Backoff
from drivers.errors import DriverError
from drivers.modbus.points import BIT_FUNCTIONS, FUNCTION_CODES
from drivers.modbus.recovery import Member, link_steps
from drivers.modbus.wire import BadAnswer, Wire, take_connect_failure
from drivers.wording import error_text

__all__ = [
    "DeviceError",
    "Link",
    "LinkDown",
    "LinkSettings",
    "ModbusError",
    "NoResponse",
    "link_key",
    "make_client",
    "settings_of",
]

log = logging.getLogger("ironwatt.modbus")


class ModbusError(DriverError):
    """Base of the driver's request errors; the message names the link, unit and address."""


# Function name -> the pymodbus client method that reads it.
_METHODS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class LinkDown(ModbusError):
    """The connection or serial port is not usable (refused, closed, waiting to reconnect)."""


class NoResponse(ModbusError):
    """The unit did not answer within the timeout (or answered garbage)."""


class DeviceError(ModbusError):
    """The unit answered with a Modbus exception response."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How to open a link; devices with equal `key` share one."""

    transport: str  # tcp | rtu | rtu-over-tcp
    host: str | None = None
    port: int = 502
    serial_port: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout: float = 0.5

    @property
    def key(self) -> tuple[str, str, int]:
        if self.transport == "rtu":
            return ("rtu", str(self.serial_port), 0)
        return (self.transport, str(self.host), self.port)

    @property
    def label(self) -> str:
        if self.transport == "rtu":
            frame = f"{self.bytesize}{self.parity}{self.stopbits}"
            return f"serial {self.serial_port} ({self.baudrate} {frame})"
        scheme = "rtu-over-tcp" if self.transport == "rtu-over-tcp" else "tcp"
        return f"{scheme}://{self.host}:{self.port}"


def link_key(device: Any) -> tuple[str, str, int]:
    return settings_of(device).key


def settings_of(device: Any, timeout: float | None = None) -> LinkSettings:
    return LinkSettings(
        transport=device.transport,
        host=device.host,
        port=device.port,
        serial_port=device.serial_port,
        baudrate=device.baudrate,
        parity=device.parity,
        stopbits=device.stopbits,
        bytesize=device.bytesize,
        timeout=device.timeout if timeout is None else timeout,
    )


def make_client(settings: LinkSettings) -> Any:
    """A pymodbus async client with its own reconnect and retries switched off (ours run)."""
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    common: dict[str, Any] = {"timeout": settings.timeout, "retries": 0, "reconnect_delay": 0}
    if settings.transport == "rtu":
        return AsyncModbusSerialClient(
            str(settings.serial_port),
            framer=FramerType.RTU,
            baudrate=settings.baudrate,
            parity=settings.parity,
            stopbits=settings.stopbits,
            bytesize=settings.bytesize,
            **common,
        )
    framer = FramerType.RTU if settings.transport == "rtu-over-tcp" else FramerType.SOCKET
    return AsyncModbusTcpClient(str(settings.host), port=settings.port, framer=framer, **common)


class Link:
    """A shared client, its lock, and its connection state.

    While the link is waiting to reconnect, requests fail at once with LinkDown (no I/O), so
    the devices on it keep their schedule and report bad samples instead of piling up. The
    devices on it `attach()` themselves: how often a lost connection is retried follows them
    (drivers.modbus.recovery: a link of one device's own is retried within its reconnect_max).
    """

    def __init__(
        self,
        settings: LinkSettings,
        *,
        client_factory: Callable[[LinkSettings], Any] = make_client,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.lock = asyncio.Lock()
        self._factory = client_factory
        self._client: Any = None
        self._tuned = backoff is None  # an explicit backoff stays as given
        steps = link_steps(())
        self._backoff = backoff or Backoff.of(steps)
        self._members: dict[str, Member] = {}
        self._clock = clock
        self._retry_at = 0.0
        self._attempted_at = 0.0  # monotonic start of the last connection attempt
        self._connect_reason: str | None = None  # why the last one failed, as pymodbus said
        self._last_error = ""
        self.connects = 0
        self.requests = 0
        # Requests in a row, across the link's units, that got no answer or a malformed one.
        self._silent = 0
        self._units: set[int] = set()
        self._wire: Wire | None = None

    @property
    def label(self) -> str:
        return self.settings.label

    # ---- the devices on it ----------------------------------------------------------------

    def attach(self, name: str, member: Member) -> None:
        """A device polls over this link from now on (its runner calls this)."""
        self._members[name] = member
        self._retune()

    def detach(self, name: str) -> None:
        self._members.pop(name, None)
        self._retune()

    @property
    def shared(self) -> bool:
        """More than one device on this link: each attempt at a dead one costs the others."""
        return len(self._members) > 1

    def _retune(self) -> None:
        if not self._tuned:
            return
        steps = link_steps(self._members.values())
        self._backoff.initial = steps.first
        self._backoff.maximum = steps.maximum
        # A wait promised under the old policy must not outlast the new cap.
        if self._retry_at and self._client is None:
            self._retry_at = min(self._retry_at, self._attempted_at + steps.maximum)

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def _ensure(self) -> Any:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop()
        now = self._clock()
        if now < self._retry_at:
            raise LinkDown(
                f"{self.label}: not connected ({self._last_error}); "
                f"next attempt in {self._retry_at - now:.1f} s"
            )
        self._attempted_at = now
        client = self._factory(self.settings)
        detail = ""
        try:
            # In this task, not wait_for's: pymodbus logs why it failed, and the line is
            # attributed to the task that awaited it (wire.take_connect_failure).
            async with asyncio.timeout(self.settings.timeout + 1.0):
                ok = await client.connect()
        except (TimeoutError, OSError) as exc:
            ok, detail = False, f" ({error_text(exc)})"
        except asyncio.CancelledError:
            client.close()
            raise
        reason = take_connect_failure()
        if reason is not None:
            self._connect_reason = reason
        if not ok and not detail and self._connect_reason is not None:
            detail = f" ({self._connect_reason or 'timed out'})"
        if not ok:
            client.close()
            if self.settings.transport == "rtu":
                hint = (
                    "check that the port exists (ls /dev/serial/by-id/), that no other program "
                    "holds it, and that the gateway's user may open it (group dialout)"
                )
            else:
                hint = (
                    "check that the device or serial gateway is powered and reachable and that "
                    "host and port are right"
                )
            self._last_error = f"cannot open {self.label}{detail}: {hint}"
            # From the attempt's start: attempts are then at most the cap (+ a poll) apart.
            self._retry_at = now + self._backoff.next_delay()
            raise LinkDown(self._last_error)
        self._backoff.reset()
        # pymodbus drops a TCP connection after a few silences in a row, whichever unit they
        # came from: two dead meters behind a gateway would cut off the live ones. The link
        # decides instead (see _silence).
        if hasattr(client, "set_max_no_responses"):
            client.set_max_no_responses(1_000_000)
            # ... which pymodbus applies only from the first answer on: a connection whose
            # first requests go unanswered would still be closed after retries + 3 of them.
            ctx = getattr(client, "ctx", None)
            if ctx is not None and hasattr(ctx, "count_until_disconnect"):
                ctx.count_until_disconnect = 1_000_000
        self._silent = 0
        self._client = client
        self._wire = Wire.install(client)
        self._last_error = "connected"
        self.connects += 1
        if self.connects > 1:
            log.info("link %s reconnected", self.label)
        return client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._wire = None

    def mark_broken(self, reason: str) -> None:
        """Close the connection; the next request reconnects (after backoff if it fails)."""
        self._drop()
        self._last_error = reason

    async def read(
        self,
        unit: int,
        function: str,
        address: int,
        count: int,
        timeout: float,  # noqa: ASYNC109 (the device's, below the link's; the message names it)
        *,
        held: bool = False,
    ) -> list[int] | list[bool]:
        """One read request under the link lock; raises LinkDown, NoResponse or DeviceError.

        `held`: the caller already holds `self.lock` (a device reading all its blocks in one
        turn on the link: one lock handover per poll instead of one per block). `timeout` is at
        most the link's (`LinkSettings.timeout`, the client's own timer: the longest of its
        devices'), which enforces it when equal; a shorter one gets a timer of its own.

        An answer is only returned when it is the answer to this request: its function code,
        and exactly `count` registers (or the bytes of `count` bits). Anything else that came
        back is a NoResponse whose message says what came, never data, and counts as a silence
        towards the link's reconnect (`_silence`): only an answer of the request's function
        code (its data, or an exception response) resets that count.
        """
        if not held:
            await self.lock.acquire()
        try:
            client = self._client
            if client is None or not client.connected:
                client = await self._ensure()
            self.requests += 1
            self._units.add(unit)
            call = getattr(client, _METHODS[function])
            wire = self._wire
            if wire is not None:
                wire.arm()
            try:
                if timeout < self.settings.timeout:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    # that races with the answer, and the daemon's shutdown would then hang.
                    async with asyncio.timeout(timeout):
                        rr = await call(address, count=count, device_id=unit)
                else:
                    # The client's own timeout is this one (the link's: the longest of its
                    # devices'); a second timer per request would cost ~7 % of the CPU.
                    rr = await call(address, count=count, device_id=unit)
            except TimeoutError:
                self._silence()
                raise NoResponse(
                    self._no_answer(wire, unit, function, address, count, timeout)
                ) from None
            except BadAnswer:
                raise self._malformed(wire, unit, function, address, count, "") from None
            except Exception as exc:  # pymodbus raises its own tree, not imported here eagerly
                raise self._failed(
                    exc, client, wire, unit, function, address, count, timeout
                ) from None
            finally:
                if wire is not None:
                    wire.disarm()
            if not client.connected:
                # pymodbus closes a TCP connection after repeated silences; follow its view.
                self.mark_broken("closed by the client after repeated timeouts")
            return self._answer(rr, wire, unit, function, address, count)
        finally:
            if not held:
                self.lock.release()

    def _failed(
        self,
        exc: Exception,
        client: Any,
        wire: Wire | None,
        unit: int,
        function: str,
        address: int,
        count: int,
        timeout: float,
    ) -> ModbusError:
        """The error to raise for what pymodbus raised: no answer, or the connection lost."""
        if type(exc).__name__ == "ModbusIOException" and "No response" in str(exc):
            self._silence()  # the client's timeout: the same as the link's own
            return NoResponse(self._no_answer(wire, unit, function, address, count, timeout))
        where = self._where(unit, function, address, count)
        name = type(exc).__name__
        if name == "ConnectionException" or not client.connected:
            self.mark_broken(f"connection lost: {exc}")
            now = self._clock()
            self._attempted_at = now
            self._retry_at = now + self._backoff.next_delay()
            return LinkDown(f"{where}: connection lost ({exc})")
        self._silence()
        return NoResponse(f"{where}: {exc}")

    def _answer(
        self, rr: Any, wire: Wire | None, unit: int, function: str, address: int, count: int
    ) -> list[int] | list[bool]:
        """The data of the answer `rr` if it answers this request; else what it is, raised."""
        code = rr.function_code
        if code & 0x7F != FUNCTION_CODES[function]:
            raise self._malformed(wire, unit, function, address, count, f"function {code}")
        if rr.isError():
            self._silent = 0  # an answer, in step with the stream: the unit or gateway lives
            code = int(getattr(rr, "exception_code", 0) or 0)
            text = EXCEPTION_NAMES.get(code, "not a defined exception code")
            where = self._where(unit, function, address, count)
            raise DeviceError(f"{where}: exception {code} ({text})", code)
        if function in BIT_FUNCTIONS:
            bits: list[bool] = rr.bits
            # pymodbus unpacks every byte that came, whatever the byte count said.
            size = (count + 7) // 8
            declared = wire.byte_count(unit, code) if wire is not None else None
            if len(bits) != 8 * size or declared not in (None, size):
                summary = f"{len(bits) // 8} bytes of bits"
                raise self._malformed(wire, unit, function, address, count, summary)
            self._silent = 0
            return bits[:count]
        regs: list[int] = rr.registers
        if len(regs) != count:
            summary = f"{len(regs)} registers"
            raise self._malformed(wire, unit, function, address, count, summary)
        self._silent = 0
        return regs

    def _no_answer(
        self, wire: Wire | None, unit: int, function: str, address: int, count: int, timeout: float
    ) -> str:
        where = self._where(unit, function, address, count)
        came = wire.describe(unit, function, count) if wire is not None else ""
        if came:
            return f"{where}: no valid answer within {timeout:g} s; what came back: {came}"
        return (
            f"{where}: no answer within {timeout:g} s (check the unit id, that the meter is "
            "powered and, on serial lines, wiring, baud rate and parity)"
        )

    def _malformed(
        self, wire: Wire | None, unit: int, function: str, address: int, count: int, summary: str
    ) -> NoResponse:
        """The error of an answer that is not one to this request (never credited).

        It counts as a silence: a link on which every answer is garbage (a TCP stream that lost
        its framing, a gateway answering for the wrong requests) is reconnected like one on
        which nobody answers.
        """
        self._silence()
        where = self._where(unit, function, address, count)
        came = wire.describe(unit, function, count) if wire is not None else ""
        return NoResponse(f"{where}: malformed answer: {came or summary}")

    def _where(self, unit: int, function: str, address: int, count: int) -> str:
        # Built for error messages only: the request path formats nothing.
        return f"{self.label} unit {unit} {function} {address}+{count}"

    def _silence(self) -> None:
        """Count a request without a valid answer (none, or a malformed one); reconnect a TCP
        link on which no unit answers validly any more.

        Dead units are retried rarely (device backoff), so answers from live units interleave
        and reset the count; only a link where every unit went quiet or answers garbage (a
        half-open connection, a hung gateway, a stream out of step) reaches the threshold.
        """
        self._silent += 1
        if self.settings.transport != "rtu" and self._silent >= 3 * len(self._units) + 3:
            # INFO: its devices have each reported themselves down; this is what the link does.
            log.info(
                "link %s: no valid answer to the last %d requests; reconnecting",
                self.label,
                self._silent,
            )
            self.mark_broken(f"no valid answer to {self._silent} requests in a row")
            self._silent = 0

    def close(self) -> None:
        self._drop()
