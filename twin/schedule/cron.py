"""Cron expressions: parsing, conversion to systemd ``OnCalendar=`` and next fire times.

A cron expression has five fields, separated by blanks::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)

Each field is ``*``, a value, a range ``a-b``, a step ``*/n``, ``a/n`` or
``a-b/n``, or a comma-separated list of those. Months accept ``jan``..``dec``
and weekdays ``sun``..``sat`` (any case). The macros ``@hourly``,
``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly``
(``@annually``) stand for their usual five-field forms.

The day fields follow Vixie cron (the cron of Debian). When both
day-of-month and day-of-week are restricted (neither field starts with
``*``), a day matches when *either* field matches. Otherwise both must match.

>>> cron_to_on_calendar("0 6 * * 1")
'Mon *-*-* 06:00:00'
>>> cron_to_on_calendar("0 8,12 * * mon-fri")
'Mon..Fri *-*-* 08,12:00:00'
>>> cron_to_on_calendar("*/15 * * * *")
'*-*-* *:00/15:00'
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "CronSchedule",
    "parse_cron",
    "cron_to_on_calendar",
    "cron_to_on_calendars",
    "next_runs",
    "MACROS",
    "MAX_SEARCH_DAYS",
]

# Macro name to its five-field form.
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# Days that next_runs scans for a matching day before it gives up (default
# 29 years). The Gregorian calendar repeats its weekdays, 29 February
# included, every 28 years between century years, so a day that matches
# at all matches within that span.
MAX_SEARCH_DAYS = 366 * 29

_MONTH_NAMES = {name.lower(): index for index, name in enumerate(calendar.month_abbr) if name}
_WEEKDAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# systemd weekday names in systemd order, keyed by cron number (Sunday is 0).
_SYSTEMD_WEEKDAYS = {1: "Mon", 2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 0: "Sun"}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None

    def valid(self) -> str:
        text = f"{self.low}-{self.high}"
        if self.names:
            first, last = list(self.names)[0], list(self.names)[-1]
            text += f" or {first}..{last}"
        return text


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day-of-week", 0, 7, _WEEKDAY_NAMES),
)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: the set of matching values of each field.

    Attributes
    ----------
    expr : str
        The expression as given (macros expanded).
    minutes, hours, days, months, weekdays : frozenset of int
        Matching values. Weekdays use 0 for Sunday (a 7 in the expression
        is stored as 0).
    day_or : bool
        True when both day fields are restricted, so a day matches when
        either of them matches (the Vixie cron rule).
    """

    expr: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_or: bool

    def matches_day(self, when: datetime) -> bool:
        """Return whether the date of ``when`` is a day this schedule fires on."""
        if when.month not in self.months:
            return False
        day_hit = when.day in self.days
        # datetime.weekday() counts from Monday = 0; cron from Sunday = 0.
        weekday_hit = (when.weekday() + 1) % 7 in self.weekdays
        if self.day_or:
            return day_hit or weekday_hit
        return day_hit and weekday_hit

    def matches(self, when: datetime) -> bool:
        """Return whether the minute of ``when`` is a fire time."""
        return when.minute in self.minutes and when.hour in self.hours and self.matches_day(when)


def _invalid(expr: str, spec: _Field, value: str, why: str) -> ValueError:
    return ValueError(
        f"invalid cron expression {expr!r}: {spec.name} field {value!r} {why}; "
        f"expected {spec.valid()}, '*', a range a-b, a step */n or a-b/n, or a comma-separated list"
    )


def _number(expr: str, spec: _Field, text: str, whole: str) -> int:
    lowered = text.lower()
    if spec.names and lowered in spec.names:
        return spec.names[lowered]
    if not text.isdigit():
        raise _invalid(expr, spec, whole, f"contains {text!r}, which is not a number")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise _invalid(expr, spec, whole, f"contains {value}, outside {spec.low}-{spec.high}")
    return value


def _parse_field(expr: str, spec: _Field, text: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _invalid(expr, spec, text, "has an empty list item")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _invalid(expr, spec, text, f"has step {step_text!r}, which is not a positive number")
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _number(expr, spec, first, text), _number(expr, spec, last, text)
            if low > high:
                raise _invalid(expr, spec, text, f"has range {base!r} whose start is after its end")
        else:
            low = _number(expr, spec, base, text)
            # "a/n" means a, a+n, ... up to the end of the field, as in Vixie cron.
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return values


def parse_cron(expr: str) -> CronSchedule:
    """Parse a five-field cron expression or macro.

    Parameters
    ----------
    expr : str
        For example ``"0 6 * * 1"`` or ``"@weekly"``.

    Returns
    -------
    CronSchedule

    Raises
    ------
    ValueError
        When the expression does not have five fields, or a field contains
        an invalid value. The message names the field, the value and the
        valid range.
    """
    text = " ".join(str(expr).split())
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise ValueError(
                f"invalid cron expression {expr!r}: unknown macro {text!r}; "
                f"expected one of {', '.join(MACROS)} or five fields"
            )
        text = MACROS[text.lower()]
    parts = text.split(" ")
    if len(parts) != 5:
        raise ValueError(
            f"invalid cron expression {expr!r}: {len(parts) if text else 0} fields; expected 5 "
            "(minute hour day-of-month month day-of-week), for example '0 6 * * 1'"
        )
    sets = [_parse_field(str(expr), spec, part) for spec, part in zip(_FIELDS, parts)]
    weekdays = {0 if day == 7 else day for day in sets[4]}
    return CronSchedule(
        expr=text,
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=frozenset(weekdays),
        day_or=not parts[2].startswith("*") and not parts[4].startswith("*"),
    )


# -- systemd OnCalendar -----------------------------------------------------


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Group sorted values into (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _render_numbers(values: frozenset[int], low: int, high: int) -> str:
    """Render a field as systemd calendar syntax: ``*``, ``a/n``, or a list of values and ``a..b`` ranges."""
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        # "a/n" in systemd means a, a+n, ... up to the end of the field, so
        # it fits only an arithmetic series that runs to the field's end.
        if step > 1 and ordered == list(range(ordered[0], high + 1, step)):
            return f"{ordered[0]:02d}/{step}"
    items = []
    for first, last in _runs(ordered):
        if first == last:
            items.append(f"{first:02d}")
        elif last == first + 1:
            items.append(f"{first:02d},{last:02d}")
        else:
            items.append(f"{first:02d}..{last:02d}")
    return ",".join(items)


def _render_weekdays(weekdays: frozenset[int]) -> str:
    """Render weekdays as systemd names, Monday first; consecutive days of three or more become ``a..b``."""
    # systemd orders the week from Monday to Sunday; cron's Sunday 0 goes last.
    ordered = sorted((7 if day == 0 else day) for day in weekdays)
    items = []
    for first, last in _runs(ordered):
        names = [_SYSTEMD_WEEKDAYS[day % 7] for day in range(first, last + 1)]
        if len(names) >= 3:
            items.append(f"{names[0]}..{names[-1]}")
        else:
            items.extend(names)
    return ",".join(items)


def _calendar(schedule: CronSchedule, *, days: bool, weekdays: bool) -> str:
    date = "*-{}-{}".format(
        _render_numbers(schedule.months, 1, 12),
        _render_numbers(schedule.days, 1, 31) if days else "*",
    )
    time = "{}:{}:00".format(_render_numbers(schedule.hours, 0, 23), _render_numbers(schedule.minutes, 0, 59))
    if weekdays and len(schedule.weekdays) < 7:
        return f"{_render_weekdays(schedule.weekdays)} {date} {time}"
    return f"{date} {time}"


def cron_to_on_calendars(expr: str) -> list[str]:
    """Convert a cron expression to the systemd ``OnCalendar=`` values of a timer.

    Returns one value, or two when both day fields are restricted. Cron then
    fires on a day matching either field, but systemd requires every part of
    one value to match. So each day field gets its own ``OnCalendar=`` line,
    because a timer fires when any of its lines matches.

    Raises
    ------
    ValueError
        As :func:`parse_cron`.

    Examples
    --------
    >>> cron_to_on_calendars("30 2 1,15 * sun")
    ['*-*-01,15 02:30:00', 'Sun *-*-* 02:30:00']
    """
    schedule = parse_cron(expr)
    if schedule.day_or:
        return [_calendar(schedule, days=True, weekdays=False), _calendar(schedule, days=False, weekdays=True)]
    return [_calendar(schedule, days=True, weekdays=True)]


def cron_to_on_calendar(expr: str) -> str:
    """Convert a cron expression to one systemd ``OnCalendar=`` value.

    Parameters
    ----------
    expr : str
        Five-field cron expression or macro, for example ``"0 6 * * 1"``.

    Returns
    -------
    str
        For example ``"Mon *-*-* 06:00:00"``. Times are the host's local
        time, as in cron.

    Raises
    ------
    ValueError
        When the expression is invalid (see :func:`parse_cron`), or when both
        day-of-month and day-of-week are restricted: that needs two
        ``OnCalendar=`` lines, which :func:`cron_to_on_calendars` returns.
    """
    values = cron_to_on_calendars(expr)
    if len(values) > 1:
        raise ValueError(
            f"cron expression {expr!r} restricts both day-of-month and day-of-week, which cron treats as "
            f"either-or; systemd needs two OnCalendar= lines for it ({' and '.join(map(repr, values))}); "
            "use cron_to_on_calendars, or write '*' in one of the day fields"
        )
    return values[0]


# -- next fire times --------------------------------------------------------


def next_runs(expr: str, after: datetime, count: int = 5) -> list[datetime]:
    """Return the next ``count`` fire times of a cron expression strictly after ``after``.

    Parameters
    ----------
    expr : str
        Five-field cron expression or macro.
    after : datetime
        Start of the search; naive or aware. Results keep its ``tzinfo`` and
        are wall-clock times, whole minutes.
    count : int
        Number of fire times to return, at least 1.

    Returns
    -------
    list of datetime
        Ascending. Shorter than ``count`` only when no further day matches
        within :data:`MAX_SEARCH_DAYS` (for example ``"0 0 30 2 *"``, which
        never fires).

    Notes
    -----
    Scans day by day and, on a matching day, only the matching hours and
    minutes, so the cost is O(days scanned + count). Wall-clock arithmetic
    ignores daylight-saving changes: a time skipped by a change is still
    returned, as is a repeated hour once.
    """
    if count < 1:
        raise ValueError(f"invalid count {count}; expected 1 or more")
    schedule = parse_cron(expr)
    hours = sorted(schedule.hours)
    minutes = sorted(schedule.minutes)
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    found: list[datetime] = []
    for _ in range(MAX_SEARCH_DAYS):
        if schedule.matches_day(day):
            for hour in hours:
                for minute in minutes:
                    when = day.replace(hour=hour, minute=minute)
                    if when < start:
                        continue
                    found.append(when)
                    if len(found) == count:
                        return found
        day = day + timedelta(days=1)
    return found
