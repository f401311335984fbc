"""OPC UA session setup shared by the driver and the technician tools: security, pinning, identity.

Builds a configured asyncua `Client` from `ConnectionSettings`, creates the gateway's own
application certificate on first use, and refuses servers whose certificate is not the pinned one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.errors import DriverError
from drivers.wording import error_text

if TYPE_CHECKING:
    from asyncua.client.client import Client

__all__ = [
    "POLICIES",
    "CertificateInfo",
    "ConnectionSettings",
    "OpcuaConnectError",
    "certificate_info",
    "connect",
    "describe_connect_error",
    "fetch_server_certificate",
    "fingerprint",
    "make_client",
    "own_certificate",
    "status_name",
    "ua_module",
]

log = logging.getLogger("ironwatt.opcua")

# Config name -> asyncua class name in asyncua.crypto.security_policies.
POLICIES = {
    "None": "SecurityPolicyNone",
    "Basic256Sha256": "SecurityPolicyBasic256Sha256",
    "Aes128_Sha256_RsaOaep": "SecurityPolicyAes128Sha256RsaOaep",
    "Aes256_Sha256_RsaPss": "SecurityPolicyAes256Sha256RsaPss",
}
POLICY_URI_PREFIX = "http://opcfoundation.org/UA/SecurityPolicy#"
POLICY_URIS = {
    "None": POLICY_URI_PREFIX + "None",
    "Basic256Sha256": POLICY_URI_PREFIX + "Basic256Sha256",
    "Aes128_Sha256_RsaOaep": POLICY_URI_PREFIX + "Aes128_Sha256_RsaOaep",
    "Aes256_Sha256_RsaPss": POLICY_URI_PREFIX + "Aes256_Sha256_RsaPss",
}
MODES = {"None": 1, "Sign": 2, "SignAndEncrypt": 3}  # ua.MessageSecurityMode values


class OpcuaConnectError(DriverError):
    """A connection attempt failed for a reason a technician can act on (message says what)."""


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Everything needed to open one session; built from a device config or from CLI flags."""

    endpoint: str
    label: str = "opcua"  # the device name, for messages
    security_policy: str = "None"
    security_mode: str = "None"
    username: str | None = None
    password: str | None = None
    server_certificate: Path | None = None
    certificate: Path | None = None  # the gateway's own application certificate (DER/PEM)
    private_key: Path | None = None
    user_certificate: Path | None = None  # X.509 user identity
    user_key: Path | None = None
    timeout: float = 5.0
    application_uri: str = "urn:ironwatt:gateway"
    pki_dir: Path | None = None  # where the own certificate is created when none is given
    watchdog_interval: float = 1.0  # the client probes ServerStatus this often (dead sessions)

    @property
    def secure(self) -> bool:
        return self.security_policy != "None"


def ua_module() -> Any:
    """asyncua.ua, imported on first use and typed loosely (its stubs want wire types)."""
    from asyncua import ua

    return ua


def read_password(password_file: Path | None, password_env: str | None, label: str) -> str | None:
    """The password from its file (trailing newline stripped) or environment variable."""
    if password_file is not None:
        try:
            return Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise OpcuaConnectError(
                f"device {label}: cannot read password_file {password_file}: {error_text(exc)}"
            ) from None
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise OpcuaConnectError(
                f"device {label}: environment variable {password_env} (password_env) is not set"
            )
        return value
    return None


def settings_for_device(
    device: Any, data_dir: Path, gateway_id: str, site: str
) -> ConnectionSettings:
    """Connection settings of a configured OPC UA device (attribute names of `OpcuaDevice`)."""
    password = read_password(
        getattr(device, "password_file", None), getattr(device, "password_env", None), device.name
    )
    return ConnectionSettings(
        endpoint=device.endpoint,
        label=device.name,
        security_policy=device.security_policy,
        security_mode=device.security_mode,
        username=device.username,
        password=password,
        server_certificate=device.server_certificate,
        user_certificate=getattr(device, "user_certificate", None),
        user_key=getattr(device, "user_key", None),
        timeout=float(getattr(device, "timeout", 5.0)),
        application_uri=f"urn:ironwatt:{site}:{gateway_id}",
        pki_dir=Path(data_dir) / "pki",
    )


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as colon-separated hex, the form tools and PLC panels show."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    fingerprint: str
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    application_uri: str | None
    dns_names: tuple[str, ...]


def load_der(path: Path) -> bytes:
    """A certificate file as DER (PEM files are converted)."""
    data = Path(path).read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def certificate_info(der: bytes) -> CertificateInfo:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    uri: str | None = None
    dns: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        uri = uris[0] if uris else None
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return CertificateInfo(
        fingerprint=fingerprint(der),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        application_uri=uri,
        dns_names=dns,
    )


async def own_certificate(pki_dir: Path, application_uri: str) -> tuple[Path, Path]:
    """The gateway's application certificate and key, created on first use and reused after.

    Regenerated only when missing, expired, or made for another application URI (a renamed
    gateway), so a server that trusted it keeps trusting it across restarts.
    """
    from asyncua.crypto import cert_gen
    from cryptography.x509.oid import ExtendedKeyUsageOID

    own = Path(pki_dir) / "own"
    own.mkdir(parents=True, exist_ok=True)
    cert, key = own / "cert.der", own / "key.pem"
    await cert_gen.setup_self_signed_certificate(
        key,
        cert,
        application_uri,
        socket.gethostname(),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"organizationName": "ironwatt"},
    )
    key.chmod(0o600)
    return cert, key


# `timeout` is asyncua's request timeout for the client made here, not only a deadline.
async def fetch_endpoints(endpoint: str, timeout: float) -> list[Any]:  # noqa: ASYNC109
    """GetEndpoints over an unsecured channel (allowed by every server, carries the certs)."""
    from asyncua.client.client import Client

    client = Client(endpoint, timeout=timeout)
    return list(await asyncio.wait_for(client.connect_and_get_server_endpoints(), timeout * 2))


def _endpoint_certificate(endpoints: list[Any], policy: str, mode: str) -> bytes | None:
    """The server certificate offered on the endpoint we will use (or on any, as fallback)."""
    from asyncua.client.client import _first_cert_from_chain

    uri, mode_value = POLICY_URIS[policy], MODES[mode]
    chosen = [
        e for e in endpoints if e.SecurityPolicyUri == uri and int(e.SecurityMode) == mode_value
    ]
    for ep in chosen + list(endpoints):
        if ep.ServerCertificate:
            return bytes(_first_cert_from_chain(ep.ServerCertificate))
    return None


async def fetch_server_certificate(
    endpoint: str,
    policy: str = "Basic256Sha256",
    mode: str = "SignAndEncrypt",
    timeout: float = 5.0,  # noqa: ASYNC109 (handed to fetch_endpoints: asyncua's request timeout)
) -> bytes:
    endpoints = await fetch_endpoints(endpoint, timeout)
    der = _endpoint_certificate(endpoints, policy, mode)
    if der is None:
        raise OpcuaConnectError(f"{endpoint}: the server offers no certificate on any endpoint")
    return der


async def make_client(settings: ConnectionSettings) -> Client:
    """A configured, not yet connected client; checks the pinned server certificate first."""
    from asyncua.client.client import Client

    _check_security(settings)
    client = Client(
        settings.endpoint, timeout=settings.timeout, watchdog_intervall=settings.watchdog_interval
    )
    client.name = client.description = f"ironwatt {settings.label}"
    client.application_uri = settings.application_uri
    client.product_uri = "urn:ironwatt"
    # Our own reconnect loop re-resolves namespaces, so the session is short-lived on the server
    # if we vanish: 60 s rather than asyncua's hour keeps dead sessions from piling up on PLCs.
    client.session_timeout = 60_000

    pinned = _pinned_certificate(settings)
    offered: bytes | None = None
    if pinned is not None or settings.secure:
        offered = await _offered_certificate(settings)
    if pinned is not None:
        _check_pin(settings, offered, pinned)
    if settings.secure:
        await _secure_channel(client, settings, offered if pinned is None else pinned)
    await _identify(client, settings)
    return client


def _check_security(settings: ConnectionSettings) -> None:
    label = settings.label
    if settings.security_policy not in POLICIES:
        raise OpcuaConnectError(
            f"device {label}: unknown security_policy {settings.security_policy!r}"
        )
    if settings.secure and settings.security_mode == "None":
        raise OpcuaConnectError(
            f"device {label}: security_policy {settings.security_policy} needs security_mode "
            "Sign or SignAndEncrypt"
        )


def _pinned_certificate(settings: ConnectionSettings) -> bytes | None:
    """The pinned server certificate; a secure policy without one is refused."""
    label, endpoint = settings.label, settings.endpoint
    pinned: bytes | None = None
    if settings.server_certificate is not None:
        try:
            pinned = load_der(settings.server_certificate)
        except (OSError, ValueError) as exc:
            raise OpcuaConnectError(
                f"device {label}: server_certificate {settings.server_certificate} cannot be "
                f"read ({error_text(exc)}): run `ironwatt opcua trust "
                f"{endpoint} --out {settings.server_certificate}`"
            ) from None
    # Never trust on first use: the technician pins with `ironwatt opcua trust` beforehand.
    if settings.secure and pinned is None:
        raise OpcuaConnectError(
            f"device {label}: security_policy {settings.security_policy} needs a pinned server "
            f"certificate: run `ironwatt opcua trust {endpoint} --out <file.der>`, check the "
            "fingerprint with the PLC, then set server_certificate to that file"
        )
    return pinned


async def _offered_certificate(settings: ConnectionSettings) -> bytes | None:
    """The certificate the server offers on the configured endpoint (GetEndpoints).

    A secure policy and mode the server does not offer is refused here, naming what it offers.
    """
    label, endpoint = settings.label, settings.endpoint
    try:
        endpoints = await fetch_endpoints(endpoint, settings.timeout)
    except (OSError, TimeoutError) as exc:
        raise OpcuaConnectError(describe_connect_error(exc, settings)) from exc
    offered = _endpoint_certificate(endpoints, settings.security_policy, settings.security_mode)
    if settings.secure:
        uri, mode_value = POLICY_URIS[settings.security_policy], MODES[settings.security_mode]
        if not any(
            e.SecurityPolicyUri == uri and int(e.SecurityMode) == mode_value for e in endpoints
        ):
            ua = ua_module()
            have = sorted({_endpoint_label(e, ua) for e in endpoints})
            raise OpcuaConnectError(
                f"device {label}: {endpoint} offers no endpoint with security_policy "
                f"{settings.security_policy} and security_mode {settings.security_mode} "
                f"(it offers: {', '.join(have)})"
            )
    return offered


def _check_pin(settings: ConnectionSettings, offered: bytes | None, pinned: bytes) -> None:
    label, endpoint = settings.label, settings.endpoint
    if offered is None:
        raise OpcuaConnectError(
            f"device {label}: {endpoint} presents no certificate, but server_certificate "
            f"{settings.server_certificate} is pinned"
        )
    if offered != pinned:
        raise OpcuaConnectError(
            f"device {label}: server certificate mismatch at {endpoint}: the server presents "
            f"SHA-256 {fingerprint(offered)}, the pinned {settings.server_certificate} is "
            f"{fingerprint(pinned)}. If the PLC's certificate was renewed on purpose, check "
            f"the new fingerprint with the PLC and run `ironwatt opcua trust {endpoint} --out "
            f"{settings.server_certificate}`; otherwise this may not be your PLC"
        )


async def _secure_channel(
    client: Client, settings: ConnectionSettings, server_certificate: bytes | None
) -> None:
    """The client's certificate (configured, or the gateway's own) and the security policy."""
    from asyncua.crypto import security_policies

    label = settings.label
    if settings.certificate is not None and settings.private_key is not None:
        cert_path, key_path = settings.certificate, settings.private_key
        # The session's ApplicationUri must match the URI inside the certificate.
        cert_uri = certificate_info(load_der(cert_path)).application_uri
        if cert_uri:
            client.application_uri = cert_uri
    else:
        if settings.pki_dir is None:
            raise OpcuaConnectError(f"device {label}: no client certificate and no data dir")
        try:
            cert_path, key_path = await own_certificate(settings.pki_dir, settings.application_uri)
        except OSError as exc:
            raise OpcuaConnectError(
                f"device {label}: cannot create or read the gateway's certificate in "
                f"{settings.pki_dir}/own ({error_text(exc)}): check the data_dir "
                "permissions (tools: --data-dir, or --certificate/--private-key)"
            ) from None
    policy_class = getattr(security_policies, POLICIES[settings.security_policy])
    await client.set_security(
        policy_class,
        str(cert_path),
        str(key_path),
        server_certificate=server_certificate,
        mode=getattr(ua_module().MessageSecurityMode, settings.security_mode),
    )


async def _identify(client: Client, settings: ConnectionSettings) -> None:
    """The user identity: an X.509 user certificate, a user name (and password), or anonymous."""
    if settings.user_certificate is not None:
        if settings.user_key is None:
            raise OpcuaConnectError(f"device {settings.label}: user_certificate needs user_key")
        await client.load_client_certificate(str(settings.user_certificate))
        await client.load_private_key(Path(settings.user_key))
    elif settings.username:
        client.set_user(settings.username)
        if settings.password is not None:
            client.set_password(settings.password)


def _endpoint_label(ep: Any, ua: Any) -> str:
    policy = ep.SecurityPolicyUri.rsplit("#", 1)[-1]
    return f"{policy}/{ua.MessageSecurityMode(ep.SecurityMode).name}"


def status_name(exc: BaseException) -> str:
    """The StatusCode a service fault carries, by its name ("BadUserAccessDenied"); else the
    exception's type."""
    code = getattr(exc, "code", None)
    return str(ua_module().StatusCode(code).name) if code is not None else type(exc).__name__


def describe_connect_error(exc: BaseException, settings: ConnectionSettings) -> str:
    """One line a technician can act on, from whatever the connect sequence raised."""
    ua = ua_module()
    label, endpoint = settings.label, settings.endpoint
    if isinstance(exc, OpcuaConnectError):
        return str(exc)
    if isinstance(exc, ua.UaStatusCodeError):
        name = status_name(exc)
        if name in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
            who = settings.username or (
                "certificate user" if settings.user_certificate else "anonymous"
            )
            return (
                f"device {label}: {endpoint} refused the user {who!r} ({name}): check username and "
                "the password in password_file/password_env, or the user's rights on the PLC"
            )
        if name in ("BadCertificateUntrusted", "BadSecurityChecksFailed", "BadCertificateInvalid"):
            return (
                f"device {label}: {endpoint} rejected the gateway's certificate ({name}): trust "
                f"the gateway certificate ({settings.pki_dir}/own/cert.der) on the PLC"
            )
        return f"device {label}: {endpoint} answered {name}"
    if isinstance(exc, ConnectionRefusedError):
        return f"device {label}: connection refused by {endpoint}: is the OPC UA server running?"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"device {label}: no answer from {endpoint} within {settings.timeout:g} s"
    if isinstance(exc, OSError):
        return f"device {label}: cannot reach {endpoint}: {exc.strerror or exc!r}"
    return f"device {label}: {endpoint}: {type(exc).__name__}: {exc}"


async def connect(settings: ConnectionSettings) -> Client:
    """A connected client, or OpcuaConnectError with a message that says what to check."""
    try:
        client = await make_client(settings)
    except OpcuaConnectError:
        raise
    except Exception as exc:
        raise OpcuaConnectError(describe_connect_error(exc, settings)) from exc
    try:
        await asyncio.wait_for(client.connect(), settings.timeout * 3)
    except BaseException as exc:
        # A timeout can cancel connect() halfway: drop whatever socket it had opened.
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        if isinstance(exc, Exception):
            raise OpcuaConnectError(describe_connect_error(exc, settings)) from exc
        raise
    return client
