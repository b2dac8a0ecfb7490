"""Live SNMP walker: GETBULK (v2c, v3) and GETNEXT (v1) walks.

:func:`walk_device` walks, on one agent, the tables that
:func:`twin.discovery.snmp.transform_varbinds` reads (:data:`WALK_ROOTS`).
Its varbinds have the same types and values as
:func:`twin.discovery.snmp.parse_snmprec` returns for a recording of the same
data, so a live walk and its ``.snmprec`` recording (:func:`write_snmprec`)
turn into the same observations.

Behaviour of one walk:

- Credentials profiles are tried in order with one GET (sysUpTime.0 and
  snmpEngineID.0); the first profile that gets a response walks the device.
- Each root is walked with one request at a time. GETBULK max-repetitions
  starts at ``WalkSettings.max_repetitions``, is halved on ``tooBig`` or on
  a timeout, and grows back by a quarter after each response, never above the
  last value that the agent rejected with ``tooBig``.
- An OID that does not follow the previous one ends that root with an
  ``order`` issue; the varbinds before it are kept. Row and time caps end a
  root, and the device time cap ends the walk, with a ``cap`` issue.
- Transport failures, timeouts, agent errors (error-status with the OID),
  tooBig, authentication failures and an empty MIB view are separate
  :class:`WalkIssue` kinds, each logged with the device ``host:port``.

v1 and v2c messages go through :mod:`twin.discovery.snmp_wire`, a BER codec
that decodes a response straight into importer values; pysnmp 7 (asyncio)
handles SNMPv3, whose USM needs its engine. pysnmp with pyasn1 costs about
135 µs of CPU per varbind, the codec about 10 µs. Every v3 walk gets its own
pysnmp engine, because pysnmp keeps USM time-window state per remote engine
id, and two devices that share an engine id must not disturb each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from twin.discovery import mib, snmp_wire
from twin.discovery.snmp import (
    COUNTER32,
    COUNTER64,
    END_OF_MIB_VIEW,
    GAUGE32,
    INTEGER,
    IP_ADDRESS_TYPE,
    NO_SUCH_INSTANCE,
    NO_SUCH_OBJECT,
    NULL,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    OPAQUE,
    TIMETICKS,
    Varbind,
)
from twin.exceptions import ConfigError

__all__ = [
    "SnmpCredentials",
    "WalkSettings",
    "WalkIssue",
    "WalkResult",
    "WALK_ROOTS",
    "ISSUE_KINDS",
    "SNMP_ENGINE_ID_OID",
    "RepetitionControl",
    "credentials_from_config",
    "walk_device",
    "write_snmprec",
    "snmprec_line",
]

logger = logging.getLogger(__name__)

# Shortest SNMPv3 authentication or privacy pass phrase (RFC 3414, 11.2).
MIN_V3_KEY_LENGTH = 8
ISSUE_KINDS = ("transport", "timeout", "agent", "too_big", "order", "cap", "end_of_mib", "engine_id", "decode", "auth")

SNMP_ENGINE_ID_OID = (1, 3, 6, 1, 6, 3, 10, 2, 1, 1, 0)
SYS_UPTIME_OID = (1, 3, 6, 1, 2, 1, 1, 3, 0)

AUTH_PROTOCOLS = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("des", "aes128", "aes192", "aes256")
VERSIONS = ("1", "2c", "3")


def _walk_roots() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Return the MIB tables as walk roots, in OID order, nested ones dropped.

    A table inside another root (lldpLocPortTable inside
    lldpLocalSystemData, dot1dBasePortTable inside dot1dBase) is walked as
    part of the outer root, so no OID is requested twice.
    """
    ordered = sorted(mib.TABLES.items(), key=lambda item: item[1])
    roots: list[tuple[str, tuple[int, ...]]] = []
    for name, oid in ordered:
        if any(oid[: len(outer)] == outer for _, outer in roots):
            continue
        roots.append((name, oid))
    return tuple(roots)


# (name, OID) of every table and scalar group that transform_varbinds reads,
# in OID order, so a walk of all roots comes out sorted like an snmprec file.
WALK_ROOTS: tuple[tuple[str, tuple[int, ...]], ...] = _walk_roots()


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SnmpCredentials:
    """One SNMP credentials profile; ``repr`` leaves out the community and keys."""

    name: str
    version: str
    community: str | None = field(default=None, repr=False)
    user: str | None = None
    auth_protocol: str | None = None
    auth_key: str | None = field(default=None, repr=False)
    priv_protocol: str | None = None
    priv_key: str | None = field(default=None, repr=False)
    context: str = ""


# Keys of one profile in the site file. Secrets are named by environment
# variable only; the keys in _SECRET_KEYS are rejected when written literally.
_PROFILE_KEYS = frozenset(
    {"name", "version", "community_env", "user", "user_env", "auth_protocol", "auth_key_env", "priv_protocol", "priv_key_env", "context"}
)
_SECRET_KEYS = {"community": "community_env", "auth_key": "auth_key_env", "priv_key": "priv_key_env", "password": "auth_key_env"}
_PROTOCOL_ALIASES = {"aes": "aes128", "sha1": "sha"}


def credentials_from_config(
    entries: dict | list[dict],
    environ: Mapping[str, str] = os.environ,
    *,
    where: str = "credentials.snmp",
) -> list[SnmpCredentials]:
    """Build credentials profiles from the site file's ``credentials.snmp``.

    ``entries`` is one profile (a dict) or a list of profiles tried in order.
    Secrets (community, authentication and privacy keys) are read from the
    environment variables the profile names in ``community_env``,
    ``auth_key_env`` and ``priv_key_env``.

    Raises
    ------
    ConfigError
        A profile writes a secret literally, has an unknown key, an invalid
        version or protocol, lacks a required key, or names an environment
        variable that is unset or empty. The message names the key path.
    """
    if isinstance(entries, dict):
        profiles = [entries]
        paths = [where]
    elif isinstance(entries, list):
        profiles = list(entries)
        paths = [f"{where}[{position}]" for position in range(len(profiles))]
    else:
        raise ConfigError(f"{where}: expected a profile (mapping) or a list of profiles, got {type(entries).__name__}")
    if not profiles:
        raise ConfigError(f"{where}: the list of SNMP credentials profiles is empty; add at least one profile")
    return [_profile(profile, environ, path) for profile, path in zip(profiles, paths)]


def _profile(profile: Any, environ: Mapping[str, str], path: str) -> SnmpCredentials:
    if not isinstance(profile, dict):
        raise ConfigError(f"{path}: expected a mapping with version and credentials keys, got {type(profile).__name__}")
    for key, env_key in _SECRET_KEYS.items():
        if key in profile:
            raise ConfigError(
                f"{path}.{key}: secrets are not allowed in the site file; "
                f"export the value in an environment variable and name that variable in {path}.{env_key}"
            )
    unknown = sorted(set(map(str, profile)) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(_PROFILE_KEYS))}")

    version = str(profile.get("version", "")).strip().lower().removeprefix("v")
    if version not in VERSIONS:
        raise ConfigError(f"{path}.version: invalid SNMP version {profile.get('version')!r}; expected 1, 2c or 3")

    def secret(key: str) -> str:
        variable = profile[key]
        if not isinstance(variable, str) or not variable:
            raise ConfigError(f"{path}.{key}: expected the name of an environment variable, got {variable!r}")
        value = environ.get(variable)
        if not value:
            state = "is empty" if value == "" else "is not set"
            raise ConfigError(f"{path}.{key}: environment variable {variable} {state}; export it before running discovery")
        return value

    context = str(profile.get("context") or "")
    if version in ("1", "2c"):
        if "community_env" not in profile:
            raise ConfigError(f"{path}.community_env: missing; SNMP v{version} needs the name of the environment variable holding the community")
        for key in ("user", "user_env", "auth_protocol", "auth_key_env", "priv_protocol", "priv_key_env"):
            if key in profile:
                raise ConfigError(f"{path}.{key}: only SNMP v3 profiles take {key}; remove it or set version: 3")
        name = str(profile.get("name") or f"v{version}")
        return SnmpCredentials(name=name, version=version, community=secret("community_env"), context=context)

    if "community_env" in profile:
        raise ConfigError(f"{path}.community_env: SNMP v3 profiles take a user, not a community; remove it or set version: 2c")
    if "user" in profile and "user_env" in profile:
        raise ConfigError(f"{path}: set either user or user_env, not both")
    if "user_env" in profile:
        user = secret("user_env")
    else:
        user = str(profile.get("user") or "")
    if not user:
        raise ConfigError(f"{path}.user: missing; SNMP v3 profiles need a user (or user_env)")

    auth_protocol = _protocol(profile, "auth_protocol", AUTH_PROTOCOLS, path)
    priv_protocol = _protocol(profile, "priv_protocol", PRIV_PROTOCOLS, path)
    if (auth_protocol is None) != ("auth_key_env" not in profile):
        raise ConfigError(f"{path}: auth_protocol and auth_key_env go together; set both or neither")
    if (priv_protocol is None) != ("priv_key_env" not in profile):
        raise ConfigError(f"{path}: priv_protocol and priv_key_env go together; set both or neither")
    if priv_protocol is not None and auth_protocol is None:
        raise ConfigError(f"{path}: privacy needs authentication; add auth_protocol and auth_key_env")
    auth_key = secret("auth_key_env") if auth_protocol else None
    priv_key = secret("priv_key_env") if priv_protocol else None
    for key, value in (("auth_key_env", auth_key), ("priv_key_env", priv_key)):
        if value is not None and len(value) < MIN_V3_KEY_LENGTH:
            raise ConfigError(
                f"{path}.{key}: the key in environment variable {profile[key]} has {len(value)} characters; "
                f"SNMPv3 keys need at least {MIN_V3_KEY_LENGTH} (RFC 3414), so set a longer key on the agents and here"
            )
    name = str(profile.get("name") or f"v3 {user}")
    return SnmpCredentials(
        name=name,
        version="3",
        user=user,
        auth_protocol=auth_protocol,
        auth_key=auth_key,
        priv_protocol=priv_protocol,
        priv_key=priv_key,
        context=context,
    )


def _protocol(profile: dict, key: str, allowed: tuple[str, ...], path: str) -> str | None:
    value = profile.get(key)
    if value is None:
        return None
    text = str(value).strip().lower().replace("-", "")
    text = _PROTOCOL_ALIASES.get(text, text)
    if text not in allowed:
        raise ConfigError(f"{path}.{key}: invalid protocol {value!r}; expected one of {', '.join(allowed)}")
    return text


# --------------------------------------------------------------------------
# Settings, issues and results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WalkSettings:
    """Timeouts, retries and caps of one device walk (seconds and varbind counts)."""

    timeout_s: float = 2.0
    retries: int = 1
    max_repetitions: int = 25
    min_repetitions: int = 1
    table_row_cap: int = 50_000
    table_time_cap_s: float = 60.0
    device_time_cap_s: float = 300.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}")
        if not 1 <= self.min_repetitions <= self.max_repetitions:
            raise ValueError(
                f"expected 1 <= min_repetitions <= max_repetitions, got {self.min_repetitions} and {self.max_repetitions}"
            )
        if self.table_row_cap < 1 or self.table_time_cap_s <= 0 or self.device_time_cap_s <= 0:
            raise ValueError("table_row_cap, table_time_cap_s and device_time_cap_s must be positive")


@dataclass
class WalkIssue:
    """A problem met while walking one device; ``kind`` is one of :data:`ISSUE_KINDS`."""

    device: str
    kind: str
    message: str
    oid: str | None = None


@dataclass
class WalkResult:
    """The varbinds and issues of one device walk."""

    host: str
    port: int
    target: str
    answered: bool
    credentials: str | None
    version: str | None
    engine_id: bytes | None
    varbinds: list[Varbind]
    issues: list[WalkIssue]
    started_at: float
    finished_at: float
    complete: dict[str, bool]


class RepetitionControl:
    """Adaptive GETBULK max-repetitions of one device walk.

    The value starts at ``start``. ``too_big`` and ``timed_out`` halve it
    (not below ``minimum``) and return False when it was already at the
    minimum, so the caller gives up on that request. ``too_big`` also lowers
    the ceiling to one below the rejected value, because the agent will reject
    it again. ``succeeded`` grows the value by a quarter (at least 1) up to
    the ceiling.
    """

    def __init__(self, start: int, minimum: int = 1) -> None:
        if not 1 <= minimum <= start:
            raise ValueError(f"expected 1 <= minimum <= start, got {minimum} and {start}")
        self.value = start
        self.minimum = minimum
        self.ceiling = start

    def succeeded(self) -> None:
        if self.value < self.ceiling:
            self.value = min(self.ceiling, self.value + max(1, self.value // 4))

    def too_big(self) -> bool:
        if self.value <= self.minimum:
            return False
        self.ceiling = max(self.minimum, self.value - 1)
        self.value = max(self.minimum, self.value // 2)
        return True

    def timed_out(self) -> bool:
        if self.value <= self.minimum:
            return False
        self.value = max(self.minimum, self.value // 2)
        return True


# --------------------------------------------------------------------------
# pysnmp values -> importer values
# --------------------------------------------------------------------------


def _oid_text(oid: Iterable[int]) -> str:
    return ".".join(map(str, oid))


_TYPE_BY_TAG: dict[tuple[int, int, int], str] = {
    (0, 0, 2): INTEGER,
    (0, 0, 4): OCTET_STRING,
    (0, 0, 5): NULL,
    (0, 0, 6): OBJECT_IDENTIFIER,
    (64, 0, 0): IP_ADDRESS_TYPE,
    (64, 0, 1): COUNTER32,
    (64, 0, 2): GAUGE32,
    (64, 0, 3): TIMETICKS,
    (64, 0, 4): OPAQUE,
    (64, 0, 6): COUNTER64,
    (128, 0, 0): NO_SUCH_OBJECT,
    (128, 0, 1): NO_SUCH_INSTANCE,
    (128, 0, 2): END_OF_MIB_VIEW,
}


def _convert(value: Any) -> tuple[str, Any]:
    """Return ``(type, value)`` of a pysnmp value as :func:`parse_snmprec` types it.

    Raises ValueError for a type that has no snmprec form.
    """
    tag = value.tagSet[0]
    value_type = _TYPE_BY_TAG.get((tag.tagClass, tag.tagFormat, tag.tagId))
    if value_type is None:
        raise ValueError(f"unsupported SNMP value type {type(value).__name__} (tag {tag})")
    if value_type in (OCTET_STRING, OPAQUE, IP_ADDRESS_TYPE):
        return value_type, bytes(value.asOctets())
    if value_type == OBJECT_IDENTIFIER:
        return value_type, tuple(value.asTuple())
    if value_type in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return value_type, None
    return value_type, int(value)


# --------------------------------------------------------------------------
# Engines and request parameters
# --------------------------------------------------------------------------


def _hlapi():
    # Imported on first use: importing pysnmp's hlapi takes about 0.25 s.
    from pysnmp.hlapi.v3arch import asyncio as hlapi

    return hlapi


def _close_engine(engine: Any) -> None:
    try:
        engine.close_dispatcher()
    except Exception as error:  # pysnmp raises bare errors when no transport was ever opened
        logger.debug("closing SNMP engine failed: %s", error)


def _check_profile(credentials: SnmpCredentials) -> None:
    """Raise ValueError for an unknown version or protocol name."""
    if credentials.version not in VERSIONS:
        raise ValueError(f"credentials {credentials.name!r}: invalid SNMP version {credentials.version!r}; expected 1, 2c or 3")
    if credentials.auth_protocol not in (None, *AUTH_PROTOCOLS) or credentials.priv_protocol not in (None, *PRIV_PROTOCOLS):
        raise ValueError(
            f"credentials {credentials.name!r}: invalid protocol {credentials.auth_protocol!r}/{credentials.priv_protocol!r}; "
            f"expected one of {', '.join(AUTH_PROTOCOLS)} and {', '.join(PRIV_PROTOCOLS)}"
        )


def _auth_data(credentials: SnmpCredentials) -> Any:
    """pysnmp's USM user of a v3 profile."""
    hlapi = _hlapi()
    _check_profile(credentials)
    auth_protocols = {
        "md5": hlapi.USM_AUTH_HMAC96_MD5,
        "sha": hlapi.USM_AUTH_HMAC96_SHA,
        "sha224": hlapi.USM_AUTH_HMAC128_SHA224,
        "sha256": hlapi.USM_AUTH_HMAC192_SHA256,
        "sha384": hlapi.USM_AUTH_HMAC256_SHA384,
        "sha512": hlapi.USM_AUTH_HMAC384_SHA512,
    }
    priv_protocols = {
        "des": hlapi.USM_PRIV_CBC56_DES,
        "aes128": hlapi.USM_PRIV_CFB128_AES,
        "aes192": hlapi.USM_PRIV_CFB192_AES,
        "aes256": hlapi.USM_PRIV_CFB256_AES,
    }
    return hlapi.UsmUserData(
        credentials.user,
        authKey=credentials.auth_key,
        privKey=credentials.priv_key,
        authProtocol=auth_protocols[credentials.auth_protocol] if credentials.auth_protocol else hlapi.USM_AUTH_NONE,
        privProtocol=priv_protocols[credentials.priv_protocol] if credentials.priv_protocol else hlapi.USM_PRIV_NONE,
    )


# pysnmp error indications that mean the agent rejected the credentials.
_AUTH_ERRORS = (
    "UnknownUserName",
    "WrongDigest",
    "AuthenticationError",
    "AuthenticationFailure",
    "DecryptionError",
    "UnknownSecurityName",
    "UnsupportedSecurityLevel",
    "UnknownCommunityName",
    "UnsupportedAuthProtocol",
    "UnsupportedPrivProtocol",
    "NotInTimeWindow",
)


@dataclass
class _Failure:
    """A request that got no usable response: ``kind`` is one of :data:`ISSUE_KINDS`."""

    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


# (oid, value type, value), as in :class:`twin.discovery.snmp_wire.Response`.
_Bound = tuple[tuple[int, ...], str | None, Any]


@dataclass
class _Session:
    """Credentials and transport of one walk.

    A v1/v2c session talks through ``client`` (the module's own codec); a v3
    session through pysnmp's ``engine``, ``auth``, ``target`` and ``context``.
    """

    device: str
    version: str
    issues: list[WalkIssue]
    client: Any = None
    community: bytes = b""
    timeout_s: float = 2.0
    retries: int = 1
    engine: Any = None
    auth: Any = None
    target: Any = None
    context: Any = None
    # pysnmp target name of auth + target, registered on the first request.
    address_name: str | None = None
    generators: dict[str, Any] = field(default_factory=dict)
    # Kinds of recovered trouble (tooBig, silence) already reported for this device.
    recovered: set[str] = field(default_factory=set)

    def issue(self, kind: str, message: str, oid: tuple[int, ...] | None = None) -> None:
        oid_text = _oid_text(oid) if oid is not None else None
        self.issues.append(WalkIssue(self.device, kind, message, oid_text))
        logger.warning("SNMP walk of %s: %s", self.device, message)

    def shrunk(self, kind: str, name: str, oid: tuple[int, ...], repetitions: int) -> None:
        """Report once per device that the agent needed a smaller max-repetitions, and log every shrink."""
        causes = {"too_big": "answered GETBULK with tooBig", "decode": "answered GETBULK only with malformed datagrams"}
        cause = causes.get(kind, "did not answer GETBULK")
        logger.info("SNMP walk of %s: %s in %s at %s; retrying with max-repetitions %d", self.device, cause, name, _oid_text(oid), repetitions)
        if kind in self.recovered:
            return
        self.recovered.add(kind)
        self.issue(
            kind,
            f"{self.device}: the agent {cause} in {name} at OID {_oid_text(oid)}; max-repetitions lowered to "
            f"{repetitions} and the request sent again (a later issue says if the table still stopped)",
            oid,
        )


async def _request(
    session: _Session, pdu: str, oids: Sequence[tuple[int, ...]], repetitions: int = 0
) -> tuple[_Failure | None, int, int, list[_Bound]]:
    """Send one GET, GETNEXT or GETBULK (``pdu``); return ``(failure, error-status, error-index, varbinds)``.

    ``varbinds`` are ``(oid, value type, value)`` with the types of
    :func:`twin.discovery.snmp.parse_snmprec`; the type is None for a value
    with no snmprec form.
    """
    if session.client is None:
        return await _pysnmp_request(session, pdu, oids, repetitions)
    try:
        response = await session.client.request(
            0 if session.version == "1" else 1,
            session.community,
            pdu,
            oids,
            max_repetitions=repetitions,
            timeout_s=session.timeout_s,
            retries=session.retries,
        )
    except snmp_wire.RequestTimeout as timeout:
        return _Failure("decode" if timeout.undecodable else "timeout", f"{timeout}"), 0, 0, []
    return None, response.error_status, response.error_index, response.varbinds


async def _pysnmp_request(
    session: _Session, pdu: str, oids: Sequence[tuple[int, ...]], repetitions: int
) -> tuple[_Failure | None, int, int, list[_Bound]]:
    """:func:`_request` through pysnmp (SNMPv3).

    The hlapi functions resolve every request OID through a MIB view and
    register the target on every call. With pysnmp 7.1.30 the first
    resolution in an engine loads the MIB compiler (0.27 s of CPU, measured
    on a 2-core development machine), and every v3 walk has its own engine.
    This function therefore calls pysnmp's command generators directly with
    numeric OIDs.
    """
    from pysnmp.entity.rfc3413 import cmdgen
    from pysnmp.hlapi.v3arch.asyncio.cmdgen import LCD
    from pysnmp.proto.rfc1902 import Null, ObjectName

    if session.address_name is None:
        session.address_name, _ = LCD.configure(session.engine, session.auth, session.target, session.context.contextName)
    generator = session.generators.get(pdu)
    if generator is None:
        classes = {"get": cmdgen.GetCommandGenerator, "next": cmdgen.NextCommandGenerator, "bulk": cmdgen.BulkCommandGenerator}
        generator = session.generators[pdu] = classes[pdu]()

    future = asyncio.get_running_loop().create_future()

    def deliver(engine: Any, handle: Any, indication: Any, status: Any, index: Any, varbinds: Sequence, context: Any) -> None:
        if not future.done():
            future.set_result((indication, status, index, varbinds))

    request = tuple((ObjectName(oid), Null("")) for oid in oids)
    common = (session.engine, session.address_name, session.context.contextEngineId, session.context.contextName)
    if pdu == "bulk":
        generator.send_varbinds(*common, 0, repetitions, request, deliver)
    else:
        generator.send_varbinds(*common, request, deliver)
    indication, status, index, varbinds = await future
    if indication:
        return _Failure(_error_kind(indication), str(indication)), 0, 0, []
    converted: list[_Bound] = []
    for oid, value in varbinds:
        try:
            converted.append((tuple(oid), *_convert(value)))
        except ValueError:
            tag = value.tagSet[0]
            converted.append((tuple(oid), None, int(tag.tagClass | tag.tagFormat | tag.tagId)))
    return None, int(status or 0), int(index or 0), converted


def _error_kind(indication: Any) -> str:
    name = type(indication).__name__
    if name == "RequestTimedOut":
        return "timeout"
    if name in _AUTH_ERRORS:
        return "auth"
    if name in ("ParseError", "DeserializationError", "SerializationError"):
        return "decode"
    if name in ("UnknownEngineID", "EngineIDMismatch"):
        return "engine_id"
    return "transport"


# --------------------------------------------------------------------------
# Walk
# --------------------------------------------------------------------------


async def walk_device(
    host: str,
    port: int,
    credentials: Sequence[SnmpCredentials],
    settings: WalkSettings = WalkSettings(),
    *,
    roots: Sequence[tuple[str, tuple[int, ...]]] = WALK_ROOTS,
) -> WalkResult:
    """Walk ``roots`` on the agent at ``host:port`` and return its varbinds.

    Profiles in ``credentials`` are tried in order; the first one that gets
    a response to a GET of sysUpTime.0 walks every root. SNMP and transport
    errors do not raise: they end up in ``WalkResult.issues``, and
    ``WalkResult.answered`` is False when no profile got a response.

    Raises
    ------
    ValueError
        A profile has an unknown version or protocol name.
    """
    device = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    started_at = time.time()
    result = WalkResult(
        host=host,
        port=port,
        target=device,
        answered=False,
        credentials=None,
        version=None,
        engine_id=None,
        varbinds=[],
        issues=[],
        started_at=started_at,
        finished_at=started_at,
        complete={name: False for name, _ in roots},
    )
    if not credentials:
        result.issues.append(WalkIssue(device, "auth", f"{device}: no SNMP credentials profile given; add one under credentials.snmp"))
        logger.warning("SNMP walk of %s: no credentials profile given", device)
        result.finished_at = time.time()
        return result

    for profile in credentials:
        _check_profile(profile)
    transports = _Transports(host, port, settings)
    # Failures of profiles tried before the one that gets a response are
    # expected with a fallback list (v3 first, then v2c), so they become
    # issues only when no profile gets a response.
    rejected: list[WalkIssue] = []
    try:
        for profile in credentials:
            session_issues: list[WalkIssue] = []
            try:
                session = await transports.session(device, profile, session_issues)
            except Exception as error:  # pysnmp wraps resolver and socket errors in PySnmpError; asyncio raises OSError
                message = f"{device}: cannot open an SNMP transport to {host!r} ({error}); check the address"
                result.issues.append(WalkIssue(device, "transport", message))
                logger.warning("SNMP walk of %s: %s", device, message)
                break
            learned: dict[str, bytes] = {}
            observer = None
            if session.engine is not None:
                observer = _engine_id_observer(learned)
                session.engine.observer.register_observer(observer, "rfc3412.prepareDataElements:response")
            try:
                answered, engine_id = await _probe(session, profile)
                if not answered:
                    rejected.extend(session_issues)
                    continue
                result.answered = True
                result.credentials = profile.name
                result.version = profile.version
                result.engine_id = learned.get("engine_id") or engine_id
                await _walk_roots_of(session, settings, roots, result, started_at)
                result.issues.extend(session_issues)
                break
            finally:
                if session.engine is not None:
                    session.engine.observer.unregister_observer(observer)
                    _close_engine(session.engine)
    finally:
        transports.close()

    for issue in rejected:
        if result.answered:
            logger.info("SNMP walk of %s: %s (profile %r got a response instead)", device, issue.message, result.credentials)
        else:
            logger.warning("SNMP walk of %s: %s", device, issue.message)
            result.issues.append(issue)
    result.finished_at = time.time()
    logger.info(
        "SNMP walk of %s: %s, %d varbinds, %d issues in %.2f s",
        device,
        f"answered with {result.credentials!r}" if result.answered else "no answer",
        len(result.varbinds),
        len(result.issues),
        result.finished_at - started_at,
    )
    return result


class _Transports:
    """The sockets of one device walk: one community client for v1/v2c, one pysnmp target for v3."""

    def __init__(self, host: str, port: int, settings: WalkSettings) -> None:
        self.host = host
        self.port = port
        self.settings = settings
        self.client: snmp_wire.CommunityClient | None = None
        self.target: Any = None

    async def session(self, device: str, profile: SnmpCredentials, issues: list[WalkIssue]) -> _Session:
        settings = self.settings
        if profile.version in ("1", "2c"):
            if self.client is None:
                self.client = await snmp_wire.CommunityClient.open(self.host, self.port)
            return _Session(
                device=device,
                version=profile.version,
                issues=issues,
                client=self.client,
                community=(profile.community or "").encode(),
                timeout_s=settings.timeout_s,
                retries=settings.retries,
            )
        hlapi = _hlapi()
        if self.target is None:
            transport_class = hlapi.Udp6TransportTarget if ":" in self.host else hlapi.UdpTransportTarget
            self.target = await transport_class.create((self.host, self.port), timeout=settings.timeout_s, retries=settings.retries)
        # Every v3 walk gets its own engine: pysnmp keeps USM time-window
        # state per remote engine id, and two devices that share an engine
        # id must not disturb each other.
        return _Session(
            device=device,
            version=profile.version,
            issues=issues,
            engine=hlapi.SnmpEngine(),
            auth=_auth_data(profile),
            target=self.target,
            context=hlapi.ContextData(contextName=profile.context.encode()),
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _engine_id_observer(learned: dict[str, bytes]):
    def observe(snmp_engine: Any, execpoint: str, variables: dict, context: Any) -> None:
        engine_id = variables.get("securityEngineId")
        if engine_id and "engine_id" not in learned:
            learned["engine_id"] = bytes(engine_id)

    return observe


def _socket_text(error: Exception) -> str:
    if isinstance(error, ConnectionRefusedError):
        return f"{error} (the host answered that nothing listens on this UDP port; check the port and that the SNMP agent runs)"
    return str(error)


async def _probe(session: _Session, profile: SnmpCredentials) -> tuple[bool, bytes | None]:
    """GET sysUpTime.0 and snmpEngineID.0; return (got a response, engine id the agent serves).

    A failure goes to ``session.issues`` without a log line. The caller logs
    it, as a warning only when no profile gets a response.
    """
    oids = (SYS_UPTIME_OID,) if session.version == "1" else (SYS_UPTIME_OID, SNMP_ENGINE_ID_OID)
    try:
        failure, status, index, varbinds = await _request(session, "get", oids)
    except Exception as error:  # pysnmp raises PySnmpError, the socket OSError
        message = f"{session.device}: SNMP v{session.version} request with profile {profile.name!r} failed: {_socket_text(error)}"
        session.issues.append(WalkIssue(session.device, "transport", message))
        return False, None
    if failure:
        kind = failure.kind
        if kind == "timeout":
            message = f"{session.device}: no response to SNMP v{session.version} with profile {profile.name!r} (timed out)"
        elif kind == "auth":
            message = f"{session.device}: SNMP v{session.version} profile {profile.name!r} rejected: {failure}; check the user, protocols and keys"
        else:
            message = f"{session.device}: SNMP v{session.version} with profile {profile.name!r} failed: {failure}"
        session.issues.append(WalkIssue(session.device, kind, message))
        return False, None
    # An error-status response (noSuchName from a v1 agent) still proves that
    # the credentials work.
    engine_id = None
    if not status:
        for oid, value_type, value in varbinds:
            if oid == SNMP_ENGINE_ID_OID and value_type == OCTET_STRING and value:
                engine_id = value
    return True, engine_id


async def _walk_roots_of(
    session: _Session,
    settings: WalkSettings,
    roots: Sequence[tuple[str, tuple[int, ...]]],
    result: WalkResult,
    started_at: float,
) -> None:
    control = RepetitionControl(settings.max_repetitions, settings.min_repetitions)
    device_deadline = time.monotonic() + settings.device_time_cap_s
    empty_view = True
    # The varbinds of the last response past the end of the previous root:
    # the roots are in OID order, so they may already hold the start of the
    # next root (or prove it empty), which saves a request per root.
    carry: list[_Bound] = []
    for position, (name, root) in enumerate(roots):
        if time.monotonic() >= device_deadline:
            skipped = ", ".join(skipped_name for skipped_name, _ in roots[position:])
            session.issue(
                "cap",
                f"{session.device}: device time cap of {settings.device_time_cap_s:g} s reached; "
                f"tables not walked: {skipped}. Raise device_time_cap_s to walk them",
                root,
            )
            return
        outcome = await _walk_root(session, settings, control, name, root, result.varbinds, device_deadline, carry)
        carry = outcome.leftover
        result.complete[name] = outcome.complete
        if outcome.count:
            empty_view = False
        if outcome.fatal:
            # A transport failure or a silent agent ends the walk; the next
            # roots would only wait for the same timeout.
            skipped = ", ".join(skipped_name for skipped_name, _ in roots[position + 1:])
            if skipped and session.issues:
                session.issues[-1].message += f"; tables not walked: {skipped}"
            return
    if empty_view:
        session.issue(
            "end_of_mib",
            f"{session.device}: the agent returned none of the walked tables (its MIB view ended or was empty); "
            "check the view the agent grants to these credentials",
        )


@dataclass
class _RootOutcome:
    count: int = 0
    complete: bool = False
    fatal: bool = False
    # Varbinds of the last response from the first one past this root on.
    leftover: list[_Bound] = field(default_factory=list)


async def _walk_root(
    session: _Session,
    settings: WalkSettings,
    control: RepetitionControl,
    name: str,
    root: tuple[int, ...],
    out: list[Varbind],
    device_deadline: float,
    carry: list[_Bound],
) -> _RootOutcome:
    """Walk one root, appending its varbinds to ``out``.

    ``carry`` contains the successors of the previous root's last OID that the
    previous response returned past that root. Those before ``root`` are
    skipped; those inside it are kept as if requested; one past it, or an
    endOfMibView, completes the root without a request.
    """
    outcome = _RootOutcome()
    root_length = len(root)
    last = root
    table_deadline = time.monotonic() + settings.table_time_cap_s
    deadline = min(table_deadline, device_deadline)
    if device_deadline <= table_deadline:
        cap_text = f"device time cap of {settings.device_time_cap_s:g} s"
    else:
        cap_text = f"time cap of {settings.table_time_cap_s:g} s per table"
    while True:
        if carry:
            varbinds, carry = carry, []
            skip_before_root = True
        else:
            skip_before_root = False
            varbinds = await _next_response(session, control, name, last, deadline, cap_text, outcome)
            if varbinds is None:
                return outcome
        for position, (oid, value_type, converted) in enumerate(varbinds):
            if oid[:root_length] != root:
                if skip_before_root and oid < root and value_type != END_OF_MIB_VIEW:
                    continue
                outcome.complete = True
                outcome.leftover = varbinds[position:]
                return outcome
            if value_type is None:
                session.issue(
                    "decode",
                    f"{session.device}: {name}: value of OID {_oid_text(oid)} skipped: tag 0x{converted:02x} has no snmprec "
                    "form, or its value is out of the type's range",
                    oid,
                )
            elif value_type == END_OF_MIB_VIEW:
                outcome.complete = True
                outcome.leftover = varbinds[position:]
                return outcome
            if oid <= last:
                session.issue(
                    "order",
                    f"{session.device}: {name} stopped: OID {_oid_text(oid)} does not follow {_oid_text(last)} "
                    f"(the agent returned OIDs out of order); the {outcome.count} varbinds before it are kept",
                    oid,
                )
                return outcome
            last = oid
            if value_type is None or value_type in (NO_SUCH_OBJECT, NO_SUCH_INSTANCE):
                continue
            if outcome.count >= settings.table_row_cap:
                session.issue(
                    "cap",
                    f"{session.device}: {name} cut off at OID {_oid_text(oid)}: row cap of {settings.table_row_cap} varbinds per table reached",
                    oid,
                )
                return outcome
            out.append(Varbind(oid, value_type, converted))
            outcome.count += 1


async def _next_response(
    session: _Session,
    control: RepetitionControl,
    name: str,
    last: tuple[int, ...],
    deadline: float,
    cap_text: str,
    outcome: _RootOutcome,
) -> list[_Bound] | None:
    """Request the successors of ``last``; return the varbinds, or None when the root ends.

    Retries with a smaller max-repetitions on tooBig and silence. When the
    root ends, the issue is recorded and ``outcome`` records whether the walk
    must stop (``fatal``) or the root is complete (v1 noSuchName, an empty
    response).
    """
    use_bulk = session.version != "1"
    while True:
        if time.monotonic() >= deadline:
            session.issue(
                "cap",
                f"{session.device}: {name} cut off after {outcome.count} varbinds at OID {_oid_text(last)}: "
                f"{cap_text} reached",
                last,
            )
            return None

        try:
            if use_bulk:
                failure, status, index, varbinds = await _request(session, "bulk", (last,), control.value)
            else:
                failure, status, index, varbinds = await _request(session, "next", (last,))
        except Exception as error:  # pysnmp raises PySnmpError, the socket OSError
            session.issue("transport", f"{session.device}: request in {name} at OID {_oid_text(last)} failed: {_socket_text(error)}", last)
            outcome.fatal = True
            return None

        if failure:
            kind = failure.kind
            # A response too large for the path can come back cut or not at
            # all; a smaller one may pass.
            if kind in ("timeout", "decode") and use_bulk and control.timed_out():
                session.shrunk(kind, name, last, control.value)
                continue
            size = f" at max-repetitions {control.value}" if use_bulk else ""
            session.issue(kind, f"{session.device}: {name} stopped at OID {_oid_text(last)}: {failure}{size}", last)
            outcome.fatal = kind in ("timeout", "transport", "decode")
            return None

        if status:
            status_code = status
            status_name = snmp_wire.error_status_name(status)
            if status_code == 1:  # tooBig
                if use_bulk and control.too_big():
                    session.shrunk("too_big", name, last, control.value)
                    continue
                session.issue(
                    "too_big",
                    f"{session.device}: {name} stopped at OID {_oid_text(last)}: the agent answers tooBig even for "
                    f"max-repetitions {control.value}",
                    last,
                )
                return None
            if status_code == 2 and session.version == "1":
                # noSuchName to a v1 GETNEXT is the end of the MIB view.
                outcome.complete = True
                return None
            bad_oid = last
            if 0 < index <= len(varbinds):
                bad_oid = varbinds[index - 1][0]
            session.issue(
                "agent",
                f"{session.device}: {name} stopped: the agent returned error-status {status_name} ({status_code}) for OID {_oid_text(bad_oid)}",
                bad_oid,
            )
            return None

        if not varbinds:
            outcome.complete = True
            return None
        control.succeeded()
        return varbinds


# --------------------------------------------------------------------------
# snmprec writer
# --------------------------------------------------------------------------


def _printable(data: bytes) -> bool:
    # Printable ASCII only, because parse_snmprec reads "4" values verbatim;
    # anything else (newline, '|', UTF-8, binary) is written as "4x" hex.
    return all(0x20 <= byte < 0x7F and byte != 0x7C for byte in data)


def snmprec_line(varbind: Varbind | tuple) -> str | None:
    """Return the ``OID|TYPE|VALUE`` line of one varbind, or None for exception values."""
    oid, value_type, value = varbind[0], varbind[1], varbind[2]
    oid_text = _oid_text(oid)
    if value_type in (NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return None
    if value_type == OCTET_STRING:
        data = bytes(value)
        return f"{oid_text}|4|{data.decode('ascii')}" if _printable(data) else f"{oid_text}|4x|{data.hex()}"
    if value_type == OPAQUE:
        return f"{oid_text}|68x|{bytes(value).hex()}"
    if value_type == IP_ADDRESS_TYPE:
        data = bytes(value)
        if len(data) == 4:
            return f"{oid_text}|64|{'.'.join(map(str, data))}"
        return f"{oid_text}|64x|{data.hex()}"
    if value_type == NULL:
        return f"{oid_text}|5|"
    if value_type == OBJECT_IDENTIFIER:
        return f"{oid_text}|6|{_oid_text(value)}"
    tag = {INTEGER: "2", COUNTER32: "65", GAUGE32: "66", TIMETICKS: "67", COUNTER64: "70"}.get(value_type)
    if tag is None:
        raise ValueError(f"OID {oid_text}: unknown varbind type {value_type!r}; expected one of the twin.discovery.snmp type names")
    return f"{oid_text}|{tag}|{int(value)}"


def write_snmprec(
    varbinds: Sequence[Varbind | tuple],
    path: str | Path,
    *,
    comment: Mapping[str, str] | None = None,
) -> None:
    """Write varbinds as an snmpsim ``.snmprec`` file in the order given.

    ``comment`` entries come first as ``# key: value`` lines, which
    :func:`twin.discovery.snmp.parse_snmprec` skips. The file is written to a
    temporary name and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    lines = []
    for key, value in (comment or {}).items():
        text = f"{key}: {value}".replace("\r", " ").replace("\n", " ")
        lines.append(f"# {text}")
    for varbind in varbinds:
        line = snmprec_line(varbind)
        if line is not None:
            lines.append(line)
    temporary = path.with_name(path.name + ".part")
    temporary.write_text("\n".join(lines) + "\n", encoding="ascii")
    os.replace(temporary, path)
