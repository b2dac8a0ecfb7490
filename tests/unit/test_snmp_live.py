"""Unit tests of the live SNMP walker's pure parts: GETBULK repetitions,
walk roots, credentials from the site file and the snmprec writer.

The walker's network behaviour (order check, caps, v1/v2c/v3) is tested
against snmpsim in tests/integration/test_snmp_live_corpus.py.
"""

from __future__ import annotations

import pytest

from twin.discovery import mib, snmp
from twin.discovery.snmp_live import (
    WALK_ROOTS,
    RepetitionControl,
    SnmpCredentials,
    WalkSettings,
    credentials_from_config,
    snmprec_line,
    write_snmprec,
)
from twin.exceptions import ConfigError
from twin.model.observation import ImportResult

# --------------------------------------------------------------------------
# Adaptive max-repetitions
# --------------------------------------------------------------------------


def test_repetitions_too_big_halves_and_caps():
    control = RepetitionControl(25)

    assert control.too_big() is True
    assert control.value == 12
    assert control.ceiling == 24


def test_repetitions_grow_back_to_ceiling():
    control = RepetitionControl(25)
    control.too_big()
    seen = []
    for _ in range(10):
        control.succeeded()
        seen.append(control.value)

    # A quarter (at least 1) per response, never above the rejected value - 1.
    assert seen[:4] == [15, 18, 22, 24]
    assert max(seen) == 24
    assert seen[-1] == 24


def test_repetitions_timeout_keeps_ceiling():
    control = RepetitionControl(20)

    assert control.timed_out() is True
    assert control.value == 10
    assert control.ceiling == 20
    for _ in range(10):
        control.succeeded()
    assert control.value == 20


def test_repetitions_give_up_at_minimum():
    control = RepetitionControl(4, minimum=1)
    results = [control.too_big() for _ in range(4)]

    assert results == [True, True, False, False]
    assert control.value == 1


def test_repetitions_minimum_respected():
    control = RepetitionControl(10, minimum=3)

    assert control.timed_out() is True
    assert control.value == 5
    assert control.timed_out() is True
    assert control.value == 3
    assert control.timed_out() is False


def test_repetitions_reject_bad_bounds():
    with pytest.raises(ValueError):
        RepetitionControl(2, minimum=3)
    with pytest.raises(ValueError):
        WalkSettings(max_repetitions=0)
    with pytest.raises(ValueError):
        WalkSettings(timeout_s=0)


# --------------------------------------------------------------------------
# Walk roots
# --------------------------------------------------------------------------


def test_walk_roots_cover_every_table():
    for name, oid in mib.TABLES.items():
        covering = [root for _, root in WALK_ROOTS if oid[: len(root)] == root]
        assert covering, f"table {name} is under no walk root"


def test_walk_roots_sorted_and_disjoint():
    oids = [oid for _, oid in WALK_ROOTS]

    assert oids == sorted(oids)
    for position, outer in enumerate(oids):
        for inner in oids[position + 1 :]:
            assert inner[: len(outer)] != outer, f"{inner} is inside {outer}"


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------

V3_PROFILE = {
    "version": 3,
    "user": "twin-monitor",
    "auth_protocol": "sha256",
    "auth_key_env": "TEST_AUTH",
    "priv_protocol": "aes128",
    "priv_key_env": "TEST_PRIV",
}
ENVIRON = {"TEST_COMMUNITY": "c0mmunity-value", "TEST_AUTH": "auth-secret-1", "TEST_PRIV": "priv-secret-2"}


def test_credentials_v2c_from_env():
    profiles = credentials_from_config({"version": "2c", "community_env": "TEST_COMMUNITY"}, ENVIRON)

    assert len(profiles) == 1
    assert profiles[0].version == "2c"
    assert profiles[0].community == "c0mmunity-value"


def test_credentials_list_keeps_order():
    entries = [V3_PROFILE, {"version": "2c", "community_env": "TEST_COMMUNITY"}, {"version": 1, "community_env": "TEST_COMMUNITY"}]
    profiles = credentials_from_config(entries, ENVIRON)

    assert [profile.version for profile in profiles] == ["3", "2c", "1"]
    v3 = profiles[0]
    assert v3.user == "twin-monitor"
    assert v3.auth_protocol == "sha256"
    assert v3.auth_key == "auth-secret-1"
    assert v3.priv_protocol == "aes128"
    assert v3.priv_key == "priv-secret-2"


def test_credentials_repr_hides_secrets():
    profiles = credentials_from_config([V3_PROFILE, {"version": "2c", "community_env": "TEST_COMMUNITY"}], ENVIRON)
    text = repr(profiles) + str(profiles)

    for secret in ENVIRON.values():
        assert secret not in text


@pytest.mark.parametrize("key", ["community", "auth_key", "priv_key"])
def test_credentials_literal_secret_rejected(key):
    profile = dict(V3_PROFILE) if key != "community" else {"version": "2c", "community_env": "TEST_COMMUNITY"}
    profile[key] = "written-in-file"

    with pytest.raises(ConfigError) as caught:
        credentials_from_config([profile], ENVIRON)
    message = str(caught.value)
    assert f"credentials.snmp[0].{key}" in message
    assert "environment variable" in message
    assert "written-in-file" not in message


def test_credentials_unset_variable_named():
    with pytest.raises(ConfigError) as caught:
        credentials_from_config({"version": "2c", "community_env": "TEST_MISSING_VAR"}, ENVIRON, where="site.yaml credentials.snmp")
    message = str(caught.value)
    assert "site.yaml credentials.snmp.community_env" in message
    assert "TEST_MISSING_VAR" in message
    assert "export" in message


def test_credentials_empty_variable_rejected():
    with pytest.raises(ConfigError, match="TEST_COMMUNITY is empty"):
        credentials_from_config({"version": "2c", "community_env": "TEST_COMMUNITY"}, {"TEST_COMMUNITY": ""})


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"version": "4"}, "version"),
        ({"auth_protocol": "sha999"}, "auth_protocol"),
        ({"priv_protocol": "blowfish"}, "priv_protocol"),
        ({"colour": "red"}, "unknown key"),
        ({"user": ""}, "user"),
        ({"community_env": "TEST_COMMUNITY"}, "community_env"),
    ],
)
def test_credentials_invalid_v3_rejected(change, fragment):
    profile = dict(V3_PROFILE)
    profile.update(change)

    with pytest.raises(ConfigError, match=fragment):
        credentials_from_config(profile, ENVIRON)


@pytest.mark.parametrize("variable, key", [("TEST_AUTH", "auth_key_env"), ("TEST_PRIV", "priv_key_env")])
def test_credentials_short_v3_key_rejected(variable, key):
    environ = dict(ENVIRON, **{variable: "short"})

    with pytest.raises(ConfigError, match=f"{key}: the key in environment variable {variable} has 5 characters"):
        credentials_from_config(V3_PROFILE, environ)


def test_credentials_priv_needs_auth():
    profile = {"version": 3, "user": "u", "priv_protocol": "aes128", "priv_key_env": "TEST_PRIV"}

    with pytest.raises(ConfigError, match="privacy needs authentication"):
        credentials_from_config(profile, ENVIRON)


def test_credentials_aliases_accepted():
    profile = dict(V3_PROFILE, auth_protocol="SHA-256", priv_protocol="AES")
    (credentials,) = credentials_from_config(profile, ENVIRON)

    assert credentials.auth_protocol == "sha256"
    assert credentials.priv_protocol == "aes128"


def test_credentials_user_from_env():
    profile = {k: v for k, v in V3_PROFILE.items() if k != "user"}
    profile["user_env"] = "TEST_USER"
    (credentials,) = credentials_from_config(profile, dict(ENVIRON, TEST_USER="from-env"))

    assert credentials.user == "from-env"


def test_credentials_empty_list_rejected():
    with pytest.raises(ConfigError, match="empty"):
        credentials_from_config([], ENVIRON)


# --------------------------------------------------------------------------
# snmprec writer
# --------------------------------------------------------------------------

ROUND_TRIP = [
    snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 1, 0), snmp.OCTET_STRING, b"Linux switch 5.10"),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 2, 0), snmp.OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 3, 0), snmp.TIMETICKS, 123456),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 4, 0), snmp.OCTET_STRING, b""),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 5, 0), snmp.OCTET_STRING, b"a|b\nc"),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 6, 0), snmp.OCTET_STRING, "Geb\u00e4ude 3".encode()),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 7, 0), snmp.INTEGER, -7),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 2, 2, 1, 6, 1), snmp.OCTET_STRING, bytes.fromhex("0200ffe70001")),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 2, 2, 1, 10, 1), snmp.COUNTER32, 4294967295),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 2, 2, 1, 5, 1), snmp.GAUGE32, 1000000000),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 10, 0, 0, 1), snmp.IP_ADDRESS_TYPE, bytes([10, 0, 0, 1])),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 4, 20, 1, 9, 1), snmp.NULL, None),
    snmp.Varbind((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1), snmp.COUNTER64, 18446744073709551615),
    snmp.Varbind((1, 3, 6, 1, 4, 1, 9, 1, 1), snmp.OPAQUE, b"\x9f\x78\x04\x3f\x80\x00\x00"),
    snmp.Varbind((1, 3, 6, 1, 4, 1, 9, 1, 2), snmp.OBJECT_IDENTIFIER, ()),
]


def test_write_snmprec_round_trip(tmp_path):
    path = tmp_path / "device.snmprec"
    write_snmprec(ROUND_TRIP, path, comment={"target": "127.0.0.1:1161", "note": "two\nlines"})

    result = ImportResult("snmp", str(path))
    parsed = snmp.parse_snmprec(path.read_text(encoding="ascii"), result)

    assert result.issues == []
    assert [(v.oid, v.type, v.value) for v in parsed] == [(v.oid, v.type, v.value) for v in ROUND_TRIP]


def test_write_snmprec_comments_first(tmp_path):
    path = tmp_path / "device.snmprec"
    write_snmprec(ROUND_TRIP[:1], path, comment={"target": "127.0.0.1:1161", "note": "two\nlines"})
    lines = path.read_text(encoding="ascii").splitlines()

    assert lines[0] == "# target: 127.0.0.1:1161"
    assert lines[1] == "# note: two lines"
    assert lines[2].startswith("1.3.6.1.2.1.1.1.0|")
    assert not (tmp_path / "device.snmprec.part").exists()


def test_snmprec_line_binary_as_hex():
    line = snmprec_line(snmp.Varbind((1, 3, 6, 1), snmp.OCTET_STRING, b"\x00\xffok"))

    assert line == "1.3.6.1|4x|00ff6f6b"


def test_snmprec_line_skips_exceptions():
    assert snmprec_line(snmp.Varbind((1, 3, 6, 1), snmp.END_OF_MIB_VIEW, None)) is None
    assert snmprec_line(snmp.Varbind((1, 3, 6, 1), snmp.NO_SUCH_OBJECT, None)) is None


def test_snmprec_line_rejects_unknown_type():
    with pytest.raises(ValueError, match="1.3.6.1"):
        snmprec_line(snmp.Varbind((1, 3, 6, 1), "Float", 1.5))


def test_credentials_dataclass_defaults():
    credentials = SnmpCredentials("v2c", "2c", community="x")

    assert credentials.context == ""
    assert "community" not in repr(credentials)


def test_walk_device_rejects_bad_protocol():
    import asyncio

    from twin.discovery.snmp_live import walk_device

    credentials = SnmpCredentials("bad", "3", user="u", auth_protocol="sha999", auth_key="k" * 8)
    with pytest.raises(ValueError, match="sha999"):
        asyncio.run(walk_device("127.0.0.1", 9, [credentials], WalkSettings(timeout_s=0.1, retries=0)))
