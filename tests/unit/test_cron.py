"""Cron expressions: conversion to systemd OnCalendar, invalid fields, next fire times."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta

import pytest

from twin.schedule.cron import cron_to_on_calendar, cron_to_on_calendars, next_runs, parse_cron

CASES = [
    ("0 6 * * 1", ["Mon *-*-* 06:00:00"]),
    ("0 8,12 * * 1-5", ["Mon..Fri *-*-* 08,12:00:00"]),
    ("0 8,12 * * mon-fri", ["Mon..Fri *-*-* 08,12:00:00"]),
    ("*/15 * * * *", ["*-*-* *:00/15:00"]),
    ("5/20 * * * *", ["*-*-* *:05/20:00"]),
    ("1-5/2 * * * *", ["*-*-* *:01,03,05:00"]),
    ("0 0-6 * * *", ["*-*-* 00..06:00:00"]),
    ("30 2 * * 0", ["Sun *-*-* 02:30:00"]),
    ("30 2 * * 7", ["Sun *-*-* 02:30:00"]),
    ("0 6 * * 5-7", ["Fri..Sun *-*-* 06:00:00"]),
    ("0 6 * * SAT,sun", ["Sat,Sun *-*-* 06:00:00"]),
    ("0 6 * * 0-7", ["*-*-* 06:00:00"]),
    ("0 0 1 */3 *", ["*-01/3-01 00:00:00"]),
    ("15 4 * jan,Jul *", ["*-01,07-* 04:15:00"]),
    ("0 12 1-7 * *", ["*-*-01..07 12:00:00"]),
    ("0 0 */2 * 1", ["Mon *-*-01/2 00:00:00"]),
    ("30 2 1,15 * sun", ["*-*-01,15 02:30:00", "Sun *-*-* 02:30:00"]),
    ("@hourly", ["*-*-* *:00:00"]),
    ("@daily", ["*-*-* 00:00:00"]),
    ("@midnight", ["*-*-* 00:00:00"]),
    ("@weekly", ["Sun *-*-* 00:00:00"]),
    ("@monthly", ["*-*-01 00:00:00"]),
    ("@yearly", ["*-01-01 00:00:00"]),
    ("  0   6 *  * 1 ", ["Mon *-*-* 06:00:00"]),
]


@pytest.mark.parametrize(("expr", "expected"), CASES)
def test_cron_on_calendar_table(expr, expected):
    assert cron_to_on_calendars(expr) == expected


def test_cron_on_calendar_single():
    assert cron_to_on_calendar("0 6 * * 1") == "Mon *-*-* 06:00:00"


def test_cron_on_calendar_rejects_either_or_days():
    with pytest.raises(ValueError, match="two OnCalendar= lines"):
        cron_to_on_calendar("30 2 1,15 * sun")


INVALID = [
    # (expression, words the message must contain)
    ("60 * * * *", ["minute", "'60'", "0-59"]),
    ("* 24 * * *", ["hour", "'24'", "0-23"]),
    ("* * 0 * *", ["day-of-month", "'0'", "1-31"]),
    ("* * 32 * *", ["day-of-month", "'32'", "1-31"]),
    ("* * * 13 *", ["month", "'13'", "1-12", "jan..dec"]),
    ("* * * foo *", ["month", "'foo'", "1-12"]),
    ("* * * * 8", ["day-of-week", "'8'", "0-7", "sun..sat"]),
    ("* * * * mon-xyz", ["day-of-week", "'mon-xyz'", "0-7"]),
    ("*/0 * * * *", ["minute", "'*/0'", "step"]),
    ("*/x * * * *", ["minute", "'*/x'", "step"]),
    ("5-1 * * * *", ["minute", "'5-1'", "start is after its end"]),
    ("1,,2 * * * *", ["minute", "'1,,2'", "empty"]),
    ("-1 * * * *", ["minute", "'-1'"]),
    ("* * * *", ["4 fields", "expected 5"]),
    ("* * * * * *", ["6 fields", "expected 5"]),
    ("", ["0 fields", "expected 5"]),
    ("@reboot", ["'@reboot'", "@weekly"]),
]


@pytest.mark.parametrize(("expr", "words"), INVALID)
def test_cron_invalid_names_field(expr, words):
    with pytest.raises(ValueError) as caught:
        cron_to_on_calendars(expr)
    message = str(caught.value)
    for word in words:
        assert word in message, message


def test_parse_cron_day_or_rule():
    assert parse_cron("0 0 1 * 1").day_or is True
    assert parse_cron("0 0 */2 * 1").day_or is False
    assert parse_cron("0 0 1 * *").day_or is False


def test_parse_cron_sunday_is_zero():
    assert parse_cron("0 0 * * 7").weekdays == frozenset({0})
    assert parse_cron("0 0 * * 5-7").weekdays == frozenset({5, 6, 0})


def test_matches_known_times():
    schedule = parse_cron("0 6 * * 1")
    assert schedule.matches(datetime(2026, 12, 7, 6, 0))  # a Monday
    assert not schedule.matches(datetime(2026, 12, 8, 6, 0))  # a Tuesday
    assert not schedule.matches(datetime(2026, 12, 7, 6, 1))
    either = parse_cron("0 0 13 * 5")  # the 13th, or any Friday
    assert either.matches(datetime(2026, 1, 13, 0, 0))  # a Tuesday the 13th
    assert either.matches(datetime(2026, 1, 16, 0, 0))  # a Friday the 16th
    assert not either.matches(datetime(2026, 1, 14, 0, 0))


def brute_force(expr: str, after: datetime, count: int, window: timedelta) -> list[datetime]:
    """Check every minute after ``after`` within ``window``."""
    schedule = parse_cron(expr)
    found = []
    when = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = after + window
    while when <= end and len(found) < count:
        if schedule.matches(when):
            found.append(when)
        when += timedelta(minutes=1)
    return found


SCAN = [
    "0 6 * * 1",
    "*/15 * * * *",
    "0 8,12 * * mon-fri",
    "30 2 1,15 * sun",
    "0 0 */2 * 1",
    "5-40/7 3,4 * * *",
    "0 0 29 2 *",
    "59 23 31 * *",
    "@monthly",
]


@pytest.mark.parametrize("expr", SCAN)
def test_next_runs_matches_brute_force(expr):
    after = datetime(2027, 12, 30, 22, 59, 30)  # crosses a year end and February of a leap year
    window = timedelta(days=70)
    expected = brute_force(expr, after, 6, window)
    got = [when for when in next_runs(expr, after, 6) if when <= after + window]
    assert got == expected


def test_next_runs_strictly_after():
    assert next_runs("0 6 * * 1", datetime(2026, 12, 7, 6, 0), 2) == [
        datetime(2026, 12, 14, 6, 0),
        datetime(2026, 12, 21, 6, 0),
    ]


def test_next_runs_never_fires():
    assert next_runs("0 0 30 2 *", datetime(2026, 1, 1), 3) == []


def test_next_runs_keeps_tzinfo():
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Berlin")
    runs = next_runs("0 6 * * 1", datetime(2026, 12, 4, 12, 0, tzinfo=zone), 1)
    assert runs == [datetime(2026, 12, 7, 6, 0, tzinfo=zone)]


def systemd_next(on_calendar: str, base: datetime, count: int) -> list[datetime]:
    """Ask systemd-analyze for the next elapses of one OnCalendar value, in UTC."""
    output = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--iterations={count}",
            f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC",
            on_calendar,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    times = []
    for line in output.splitlines():
        label, _, value = line.strip().partition(": ")
        if label in ("Next elapse",) or label.startswith("Iter."):
            if value == "never":
                continue
            # "Mon 2026-01-05 06:00:00 UTC"
            times.append(datetime.strptime(value.split(" ", 1)[1].rsplit(" ", 1)[0], "%Y-%m-%d %H:%M:%S"))
    return times


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("expr", SCAN + ["0 12 1-7 * *", "15 4 * jan,jul *", "0 6 * * 5-7", "0 0 1 */3 *"])
def test_on_calendar_agrees_with_systemd(expr):
    base = datetime(2027, 12, 30, 22, 59, 0)
    count = 8
    elapses = sorted({when for value in cron_to_on_calendars(expr) for when in systemd_next(value, base, count)})
    assert next_runs(expr, base, count) == elapses[:count]
