"""Scheduled reports: cron expressions, systemd timers or crontab lines, and the report cycle.

>>> from twin.schedule import cron_to_on_calendar
>>> cron_to_on_calendar("0 6 * * 1")
'Mon *-*-* 06:00:00'
"""

from twin.schedule.cron import CronSchedule, cron_to_on_calendar, cron_to_on_calendars, next_runs, parse_cron
from twin.schedule.cycle import CycleResult, run_cycle, workspace_lock
from twin.schedule.units import Schedule, add_schedule, list_schedules, remove_schedule, site_slug

__all__ = [
    "CronSchedule",
    "parse_cron",
    "cron_to_on_calendar",
    "cron_to_on_calendars",
    "next_runs",
    "Schedule",
    "add_schedule",
    "remove_schedule",
    "list_schedules",
    "site_slug",
    "CycleResult",
    "run_cycle",
    "workspace_lock",
]
