"""A broker that accepts MQTT 3.1.1 connections and never acknowledges a PUBLISH.

It answers CONNECT and PINGREQ (so the session stays up) and counts what it swallows.
Runs an asyncio server on loopback in its own thread.
"""

from __future__ import annotations

import asyncio
import threading


class SilentBroker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.publishes: list[str] = []  # topics, in arrival order
        self.connects = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readexactly(1)
                length, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = head[0] & 0xF0
                if kind == 0x10:  # CONNECT -> CONNACK accepted
                    self.connects += 1
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 0xC0:  # PINGREQ -> PINGRESP
                    writer.write(b"\xd0\x00")
                elif kind == 0x30:  # PUBLISH: swallowed, never a PUBACK
                    tlen = int.from_bytes(body[:2], "big")
                    self.publishes.append(body[2 : 2 + tlen].decode())
                elif kind == 0xE0:  # DISCONNECT
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def start(self) -> None:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        )
        self._server = fut.result(5)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
