"""A simulated blast-furnace PLC: an asyncua server with evolving plant values under a namespace.

Used by the OPC UA tests, `bench/opcua.py` and `make demo`; also runs on its own:
`python -m gateway.sim.opcua_plc --port 4841 [--security Basic256Sha256 --user gateway:secret]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from gateway.sim.ports import free_port

__all__ = ["PLC_NAMESPACE", "PlcVariable", "SimulatedPlc", "free_port", "main"]

PLC_NAMESPACE = "urn:plant1:bf2"
AUX_NAMESPACE = "urn:plant1:aux"
FILLER_NAMESPACE = "urn:plant1:filler"

log = logging.getLogger("ironwatt.sim.opcua")

# "Now" as a default timestamp of an injected value (None means: no timestamp at all).
_NOW: Any = object()


@dataclass(frozen=True, slots=True)
class PlcVariable:
    """One simulated variable: string node id (in PLC_NAMESPACE), OPC UA type, start value."""

    node: str
    vtype: str  # a ua.VariantType name
    initial: Any


# Node ids read like PLC tags; the dotted prefix becomes the browse folder.
VARIABLES: tuple[PlcVariable, ...] = (
    PlcVariable("Production.HotMetalTons", "Double", 125_000.0),
    PlcVariable("Production.Pieces", "UInt32", 0),
    PlcVariable("Utilities.NG.Flow", "Float", 850.0),
    PlcVariable("Utilities.Power.kW", "Double", 4200.0),
    # The rest of the works, as one PLC: what the demo's process groups account (rates per
    # hour in _RATES; counters in t, flows in m3/h or t/h).
    PlcVariable("Charging.CokeTons", "Double", 48_200.0),
    PlcVariable("Charging.CoalTons", "Double", 21_300.0),
    PlcVariable("Utilities.BFG.Recovered", "Float", 30_000.0),
    PlcVariable("Production.ConverterSteelTons", "Double", 310_000.0),
    PlcVariable("Utilities.Oxygen.Flow", "Float", 8_250.0),
    PlcVariable("Recovery.ConverterGas.Flow", "Float", 15_000.0),
    PlcVariable("Recovery.Steam.Flow", "Float", 12.0),
    PlcVariable("Production.EafSteelTons", "Double", 52_000.0),
    PlcVariable("Utilities.EafOxygen.Flow", "Float", 4_640.0),
    PlcVariable("Production.RolledTons", "Double", 140_000.0),
    PlcVariable("Line.Status", "Int16", 1),
    PlcVariable("Furnace.Temp1", "Double", 1450.0),
    PlcVariable("Furnace.Temp2", "Double", 1440.0),
    PlcVariable("Furnace.Temp3", "Double", 1460.0),
    PlcVariable("Status.Running", "Boolean", True),
    PlcVariable("Types.SByte", "SByte", -5),
    PlcVariable("Types.Byte", "Byte", 200),
    PlcVariable("Types.Int16", "Int16", -1234),
    PlcVariable("Types.UInt16", "UInt16", 54321),
    PlcVariable("Types.Int32", "Int32", -123456),
    PlcVariable("Types.UInt32", "UInt32", 3_000_000_000),
    PlcVariable("Types.Int64", "Int64", -(2**40)),
    PlcVariable("Types.UInt64", "UInt64", 2**50),
    PlcVariable("Types.Float", "Float", 1.5),
    PlcVariable("Types.Double", "Double", 2.25),
    PlcVariable("Info.Name", "String", "Blast furnace 2"),
    PlcVariable("Test.Setpoint", "Double", 0.0),
    PlcVariable("Test.Quality", "Double", 0.0),
)


# Counters and what they gain an hour: a blast furnace of ~60 t/h hot metal at 320 kg coke and
# 140 kg coal a tonne, a converter of 150 t/h, an EAF whose heats the demo compresses (its tonnes
# scaled with its energy: ~380 kWh/t), a bar mill of 62 t/h.
_RATES = {
    "Charging.CokeTons": 19.2,
    "Charging.CoalTons": 8.4,
    "Production.ConverterSteelTons": 150.0,
    "Production.EafSteelTons": 116.0,
    "Production.RolledTons": 62.0,
}
# Flows (m3/h, t/h): base, swing and the swing's period in s. Oxygen ~55 m3/t at the converter
# and ~40 m3/t at the EAF; ~100 m3/t of converter gas and ~80 kg/t of steam recovered.
_FLOWS = {
    "Utilities.BFG.Recovered": (30_000.0, 1_500.0, 25.0),
    "Utilities.Oxygen.Flow": (8_250.0, 300.0, 19.0),
    "Recovery.ConverterGas.Flow": (15_000.0, 900.0, 23.0),
    "Recovery.Steam.Flow": (12.0, 0.8, 31.0),
    "Utilities.EafOxygen.Flow": (4_640.0, 200.0, 17.0),
}


@dataclass
class SimulatedPlc:
    """The server, restartable on the same port, optionally with security and users.

    `namespace_order="shifted"` registers two other namespaces first, so PLC_NAMESPACE gets a
    different index than with "normal": what a real PLC may do after a firmware or project update.
    """

    port: int = 0
    host: str = "127.0.0.1"
    namespace_order: str = "normal"
    evolve_interval: float | None = 0.5
    security: Sequence[str] = ("None",)  # "None", "Basic256Sha256_SignAndEncrypt", ...
    users: dict[str, str] | None = None  # None: anonymous allowed; else username -> password
    user_certificates: Sequence[Path] = ()  # X.509 user identities accepted
    cert_dir: Path | None = None
    bench_items: int = 0
    bench_interval: float = 0.1
    max_nodes_per_read: int | None = None  # OperationLimits, to exercise clients' chunking
    # Misbehaviours (see `misbehave`): a service fault BadTooManyMonitoredItems for a
    # CreateMonitoredItems call that would take a subscription past this many items; a Read of
    # DataType attributes answered this many seconds late; PLC_NAMESPACE moved this many times,
    # each time a client starts monitoring the NamespaceArray (its array then differs between
    # the client's read and its watch, at every session).
    max_monitored_items: int | None = None
    datatype_read_delay: float = 0.0
    move_on_watch: int = 0
    server: Any = field(default=None, init=False, repr=False)
    nodes: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    ns_index: int = field(default=0, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    @property
    def certificate_path(self) -> Path | None:
        return None if self.cert_dir is None else Path(self.cert_dir) / "server-cert.der"

    async def start(self) -> None:
        from asyncua.crypto import cert_gen
        from asyncua.crypto.permission_rules import User, UserRole
        from asyncua.server.server import Server
        from asyncua.server.user_managers import UserManager
        from cryptography.x509.oid import ExtendedKeyUsageOID

        ua = _ua()
        users = self.users
        user_certs = await asyncio.to_thread(_read_all, self.user_certificates)

        class PlcUsers(UserManager):
            def get_user(
                self,
                iserver: Any,
                username: str | None = None,
                password: str | None = None,
                certificate: Any = None,
            ) -> User | None:
                # asyncua passes the channel's client certificate here, or the X.509 user
                # identity once its token signature was verified.
                if username is not None:
                    ok = users is None or users.get(username) == password
                    return User(role=UserRole.User, name=username) if ok else None
                if certificate is not None and user_certs:
                    der = certificate if isinstance(certificate, bytes) else _der(certificate)
                    if der in user_certs:
                        return User(role=UserRole.User, name="x509")
                if users is None and not user_certs:
                    return User(role=UserRole.User)
                return None

        server = Server(user_manager=PlcUsers())
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/")
        server.set_server_name("ironwatt simulated PLC")
        await server.set_application_uri("urn:ironwatt:sim:plc")
        policies = [getattr(ua.SecurityPolicyType, _policy_type(s)) for s in self.security]
        server.set_security_policy(policies)
        if users is not None or user_certs:
            tokens: list[type] = [ua.UserNameIdentityToken, ua.X509IdentityToken]
            server.set_identity_tokens(tokens)
        if any(s != "None" for s in self.security):
            if self.cert_dir is None:
                raise ValueError("a secure simulated PLC needs cert_dir for its certificate")
            await asyncio.to_thread(Path(self.cert_dir).mkdir, parents=True, exist_ok=True)
            cert, key = (
                Path(self.cert_dir) / "server-cert.der",
                Path(self.cert_dir) / "server-key.pem",
            )
            await cert_gen.setup_self_signed_certificate(
                key,
                cert,
                "urn:ironwatt:sim:plc",
                socket.gethostname(),
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
                {"organizationName": "ironwatt sim"},
            )
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))

        if self.namespace_order == "shifted":
            await server.register_namespace(AUX_NAMESPACE)
            await server.register_namespace(FILLER_NAMESPACE)
            self.ns_index = await server.register_namespace(PLC_NAMESPACE)
        else:
            self.ns_index = await server.register_namespace(PLC_NAMESPACE)
            await server.register_namespace(AUX_NAMESPACE)

        self.nodes = await self._add_variables(server, self.ns_index)
        self._hook_services(server)
        if self.max_nodes_per_read is not None:
            limit = server.get_node(
                ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
            )
            await limit.write_value(ua.Variant(self.max_nodes_per_read, ua.VariantType.UInt32))
        await server.start()
        self.server = server
        if self.evolve_interval:
            self._tasks.append(asyncio.create_task(self._evolve(self.evolve_interval)))
        if self.bench_items:
            self._tasks.append(asyncio.create_task(self._bench(self.bench_interval)))
        log.info(
            "simulated PLC listening on %s (ns=%d %s)", self.endpoint, self.ns_index, PLC_NAMESPACE
        )

    def _hook_services(self, server: Any) -> None:
        """Where the misbehaviours act: before a client's Read, around CreateMonitoredItems."""
        from asyncua.common.callback import CallbackType
        from asyncua.common.utils import ServiceError

        ua = _ua()
        service = server.iserver.subscription_service
        create = service.create_monitored_items

        async def create_monitored_items(params: Any) -> Any:
            limit = self.max_monitored_items
            sub = service.subscriptions.get(params.SubscriptionId)
            if limit is not None and sub is not None:
                held = len(sub.monitored_item_srv._monitored_items)
                if held + len(params.ItemsToCreate) > limit:
                    raise ServiceError(ua.StatusCodes.BadTooManyMonitoredItems)
            results = await create(params)
            watched = ua.NodeId(ua.ObjectIds.Server_NamespaceArray)
            if self.move_on_watch > 0 and any(
                item.ItemToMonitor.NodeId == watched for item in params.ItemsToCreate
            ):
                self.move_on_watch -= 1
                await self.move_namespace()
            return results

        service.create_monitored_items = create_monitored_items

        async def pre_read(event: Any, _dispatcher: Any) -> None:
            if self.datatype_read_delay > 0 and event.is_external:
                nodes = event.request_params.NodesToRead
                if any(rv.AttributeId == ua.AttributeIds.DataType for rv in nodes):
                    await asyncio.sleep(self.datatype_read_delay)

        server.subscribe_server_callback(CallbackType.PreRead, pre_read)

    def misbehave(
        self,
        max_monitored_items: int | None = None,
        datatype_read_delay: float = 0.0,
        move_on_watch: int = 0,
    ) -> None:
        """Set every misbehaviour at once (the defaults: a well-behaved server)."""
        self.max_monitored_items = max_monitored_items
        self.datatype_read_delay = datatype_read_delay
        self.move_on_watch = move_on_watch

    async def _add_variables(self, server: Any, idx: int) -> dict[str, Any]:
        """The BF2 object, its folders and variables under namespace index `idx`."""
        ua = _ua()
        root = await server.nodes.objects.add_object(
            ua.NodeId("BF2", idx), ua.QualifiedName("BF2", idx)
        )
        folders: dict[str, Any] = {}
        nodes: dict[str, Any] = {}
        specs = list(VARIABLES) + [
            PlcVariable(f"Bench.Item{i:04d}", "Double", 0.0) for i in range(self.bench_items)
        ]
        for spec in specs:
            prefix, _, leaf = spec.node.rpartition(".")
            parent = root
            path = ""
            for part in prefix.split(".") if prefix else []:
                path = f"{path}.{part}" if path else part
                if path not in folders:
                    folders[path] = await parent.add_folder(
                        ua.NodeId(f"{path}/", idx), ua.QualifiedName(part, idx)
                    )
                parent = folders[path]
            vtype = getattr(ua.VariantType, spec.vtype)
            var = await parent.add_variable(
                ua.NodeId(spec.node, idx),
                ua.QualifiedName(leaf, idx),
                ua.Variant(spec.initial, vtype),
            )
            await var.set_writable()
            nodes[spec.node] = var
        return nodes

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def restart(self, namespace_order: str | None = None, downtime: float = 0.0) -> None:
        await self.stop()
        if namespace_order is not None:
            self.namespace_order = namespace_order
        if downtime:
            await asyncio.sleep(downtime)
        await self.start()

    async def write(self, node: str, value: Any, status: int | None = None) -> None:
        """Set a value server-side with the variable's own type (a Float stays a Float)."""
        ua = _ua()

        var = self.nodes[node]
        vtype = await var.read_data_type_as_variant_type()
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode=ua.StatusCode(status if status is not None else ua.StatusCodes.Good),
            SourceTimestamp=_now(),
            ServerTimestamp=_now(),
        )
        await self.server.write_attribute_value(var.nodeid, dv)

    # -- fault injection: a server that answers badly (tests of the driver's defences) ------

    async def inject(
        self,
        node: str,
        value: Any,
        vtype: str | None = None,
        status: int = 0,
        source: Any = _NOW,
        server: Any = _NOW,
    ) -> None:
        """Set a value as a misbehaving server would send it: any type, status and timestamps.

        Bypasses asyncua's type check (a String in a Double node) and its nulling of the value
        under a Bad status; `source`/`server` are datetimes, None (left out) or now by default.
        """
        ua = _ua()
        var = self.nodes[node]
        variant_type = (
            getattr(ua.VariantType, vtype)
            if vtype is not None
            else await var.read_data_type_as_variant_type()
        )
        stamp = _now()
        dv = ua.DataValue(
            ua.Variant(value, variant_type),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=stamp if source is _NOW else source,
            ServerTimestamp=stamp if server is _NOW else server,
        )
        await self._force(var.nodeid, dv)

    async def _force(self, nodeid: Any, dv: Any) -> None:
        """What write_attribute_value does once its checks pass: store, then notify monitors."""
        ua = _ua()
        attval = self.server.iserver.aspace._nodes[nodeid].attributes[ua.AttributeIds.Value]
        attval.value = dv
        attval.value_callback = None
        for handle, callback in list(attval.datachange_callbacks.items()):
            await callback(handle, dv)

    async def register_namespace(self, uri: str) -> int:
        """Append a namespace (what a server does when a module is added): no index moves."""
        return int(await self.server.register_namespace(uri))

    async def move_namespace(self) -> int:
        """PLC_NAMESPACE moves to a new index while sessions stay open, as after a project reload.

        Its variables are re-created under the new index (current values kept); the old index
        now names a retired namespace whose Float/Double variables read -999, so a client that
        keeps the old index reads the wrong variable. Returns the new index.
        """
        ua = _ua()
        old_index, old_nodes = self.ns_index, self.nodes
        array_node = self.server.get_node(ua.NodeId(ua.ObjectIds.Server_NamespaceArray))
        namespaces = list(await array_node.read_value())
        new_index = len(namespaces)
        new_nodes = await self._add_variables(self.server, new_index)
        for name, var in old_nodes.items():
            dv = await var.read_data_value(raise_on_bad_status=False)
            await self._force(new_nodes[name].nodeid, dv)
        namespaces[old_index] = f"urn:plant1:retired{old_index}"
        namespaces.append(PLC_NAMESPACE)
        self.nodes, self.ns_index = new_nodes, new_index
        # The table changes before the old variables do: a watching client can tell.
        await array_node.write_value(ua.Variant(namespaces, ua.VariantType.String))
        for name, var in old_nodes.items():
            vtype = next((v.vtype for v in VARIABLES if v.node == name), "Double")
            if vtype in ("Double", "Float"):
                variant = ua.Variant(-999.0, getattr(ua.VariantType, vtype))
                await self._force(var.nodeid, ua.DataValue(variant, SourceTimestamp=_now()))
        return new_index

    async def control(self, command: dict[str, Any]) -> dict[str, Any]:
        """One command of the `--control` channel (JSON lines on stdin, answers on stdout)."""
        from datetime import datetime

        ua = _ua()
        op = command.get("op")
        if op == "inject":

            def stamp(key: str) -> Any:
                if key not in command:
                    return _NOW
                at = command[key]
                return None if at is None else datetime.fromtimestamp(float(at), UTC)

            status = command.get("status", 0)
            if isinstance(status, str):
                status = getattr(ua.StatusCodes, status)
            value = command.get("value")
            if command.get("type") == "ByteString" and isinstance(value, str):
                value = value.encode()
            await self.inject(
                command["node"],
                value,
                command.get("type"),
                int(status),
                stamp("source"),
                stamp("server"),
            )
            return {"ok": True}
        if op == "move_namespace":
            return {"ok": True, "ns": await self.move_namespace()}
        if op == "register_namespace":
            return {"ok": True, "ns": await self.register_namespace(command["uri"])}
        if op == "ns":
            return {"ok": True, "ns": self.ns_index}
        if op == "misbehave":
            self.misbehave(
                command.get("max_monitored_items"),
                float(command.get("datatype_read_delay", 0.0)),
                int(command.get("move_on_watch", 0)),
            )
            return {"ok": True, "ns": self.ns_index}
        raise ValueError(f"unknown op {op!r}")

    async def _evolve(self, interval: float) -> None:
        ua = _ua()

        rng = random.Random(7)
        state = {v.node: v.initial for v in VARIABLES}
        t = 0.0
        while True:
            await asyncio.sleep(interval)
            t += interval
            # ~60 t/h of hot metal, a piece per tick, gas and temperatures around setpoints.
            state["Production.HotMetalTons"] += 60.0 * interval / 3600.0
            state["Production.Pieces"] = (state["Production.Pieces"] + 1) % 2**32
            state["Utilities.NG.Flow"] = 850.0 + 40.0 * math.sin(t / 30.0) + rng.uniform(-5, 5)
            state["Utilities.Power.kW"] = 4200.0 + 300.0 * math.sin(t / 45.0) + rng.uniform(-20, 20)
            for i, base in ((1, 1450.0), (2, 1440.0), (3, 1460.0)):
                state[f"Furnace.Temp{i}"] = (
                    base + 8.0 * math.sin(t / (20.0 + i)) + rng.uniform(-1, 1)
                )
            for name, per_hour in _RATES.items():  # counters
                state[name] += per_hour * interval / 3600.0
            for name, (base, swing, period) in _FLOWS.items():
                wobble = rng.uniform(-0.002, 0.002) * base
                state[name] = base + swing * math.sin(t / period) + wobble
            for name in (
                "Production.HotMetalTons",
                "Production.Pieces",
                "Utilities.NG.Flow",
                "Utilities.Power.kW",
                "Furnace.Temp1",
                "Furnace.Temp2",
                "Furnace.Temp3",
                *_RATES,
                *_FLOWS,
            ):
                spec = next(v for v in VARIABLES if v.node == name)
                dv = ua.DataValue(
                    ua.Variant(state[name], getattr(ua.VariantType, spec.vtype)),
                    SourceTimestamp=_now(),
                    ServerTimestamp=_now(),
                )
                await self.server.write_attribute_value(self.nodes[name].nodeid, dv)

    async def _bench(self, interval: float) -> None:
        """Every bench item changes every `interval`, on the monotonic clock."""
        ua = _ua()

        loop = asyncio.get_running_loop()
        ids = [self.nodes[f"Bench.Item{i:04d}"].nodeid for i in range(self.bench_items)]
        tick, start = 0, loop.time()
        while True:
            tick += 1
            now = _now()
            for k, nodeid in enumerate(ids):
                dv = ua.DataValue(
                    ua.Variant(float(tick * 10_000 + k), ua.VariantType.Double),
                    SourceTimestamp=now,
                    ServerTimestamp=now,
                )
                await self.server.write_attribute_value(nodeid, dv)
            delay = start + tick * interval - loop.time()
            await asyncio.sleep(max(0.0, delay))


async def _control(plc: SimulatedPlc, stop: asyncio.Event) -> None:
    """Commands from stdin until it closes (the test that drives the PLC went away)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            answer = await plc.control(json.loads(line))
        except Exception as exc:  # a bad command is answered, never fatal
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    stop.set()


def _ua() -> Any:
    """asyncua.ua, imported on first use and typed loosely (its stubs want wire types)."""
    from asyncua import ua

    return ua


def _read_all(paths: Sequence[Path]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


def _der(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return bytes(certificate.public_bytes(Encoding.DER))


def _now() -> Any:
    from datetime import datetime

    return datetime.now(UTC)


def _policy_type(name: str) -> str:
    """'Basic256Sha256_SignAndEncrypt' -> ua.SecurityPolicyType member name."""
    if name == "None":
        return "NoSecurity"
    policy, _, mode = name.partition("_")
    mapping = {
        "Basic256Sha256": "Basic256Sha256",
        "Aes128": "Aes128Sha256RsaOaep",
        "Aes256": "Aes256Sha256RsaPss",
    }
    if policy in ("Aes128", "Aes256"):
        # 'Aes128_Sha256_RsaOaep_Sign' -> policy Aes128, mode after the last '_'
        mode = name.rsplit("_", 1)[1]
    return f"{mapping[policy]}_{mode}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.sim.opcua_plc", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4841)
    parser.add_argument("--namespace-order", choices=("normal", "shifted"), default="normal")
    parser.add_argument("--static", action="store_true", help="values change only when written")
    parser.add_argument("--evolve-interval", type=float, default=0.5)
    parser.add_argument(
        "--security",
        action="append",
        default=None,
        help="None, Basic256Sha256_Sign, Basic256Sha256_SignAndEncrypt, Aes128_Sha256_RsaOaep_"
        "SignAndEncrypt, Aes256_Sha256_RsaPss_SignAndEncrypt ... (repeatable; default None)",
    )
    parser.add_argument("--user", action="append", default=None, help="USER:PASSWORD (repeatable)")
    parser.add_argument("--user-certificate", action="append", default=[], type=Path)
    parser.add_argument("--cert-dir", type=Path, default=None)
    parser.add_argument("--bench-items", type=int, default=0)
    parser.add_argument("--bench-interval", type=float, default=0.1)
    parser.add_argument("--max-nodes-per-read", type=int, default=None)
    parser.add_argument(
        "--control",
        action="store_true",
        help="read JSON commands from stdin (inject, move_namespace, register_namespace, ns, "
        "misbehave); "
        "one JSON answer per line on stdout",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    users = None
    if args.user:
        users = dict(u.split(":", 1) for u in args.user)
    plc = SimulatedPlc(
        port=args.port,
        host=args.host,
        namespace_order=args.namespace_order,
        evolve_interval=None if args.static else args.evolve_interval,
        security=tuple(args.security or ["None"]),
        users=users,
        user_certificates=tuple(args.user_certificate),
        cert_dir=args.cert_dir,
        bench_items=args.bench_items,
        bench_interval=args.bench_interval,
        max_nodes_per_read=args.max_nodes_per_read,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await plc.start()
        # The line tests and benches wait for before they connect.
        print(f"READY {plc.endpoint} ns={plc.ns_index}", flush=True)
        control = asyncio.create_task(_control(plc, stop)) if args.control else None
        await stop.wait()
        if control is not None:
            control.cancel()
        await plc.stop()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
