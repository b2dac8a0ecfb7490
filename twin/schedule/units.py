"""Schedule files: systemd user timers, or a crontab line where systemd is absent.

:func:`add_schedule` writes ``iomt-twin-<site-slug>.service`` and ``.timer``
into the systemd user unit folder, or appends a line to a crontab file. It
never runs ``systemctl`` or ``crontab``: it logs and prints the command the
user runs next, so a test or a dry run changes nothing outside the files
it names.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from twin.exceptions import ConfigError
from twin.model.site import load_site
from twin.schedule.cron import cron_to_on_calendars

__all__ = [
    "Schedule",
    "add_schedule",
    "remove_schedule",
    "list_schedules",
    "site_slug",
    "activation_command",
    "default_twin_command",
    "UNIT_PREFIX",
    "DEFAULT_UNIT_DIR",
    "DEFAULT_CRONTAB_FILE",
    "SYSTEMD_RUNTIME_DIR",
]

log = logging.getLogger(__name__)

# Prefix of unit names and of the crontab marker comment.
UNIT_PREFIX = "iomt-twin-"
# systemd user unit folder, the default of add_schedule's unit_dir.
DEFAULT_UNIT_DIR = Path("~/.config/systemd/user")
# Crontab file written when systemd is absent and no crontab_file is given.
DEFAULT_CRONTAB_FILE = Path("~/.config/iomt-twin/crontab")
# Present when the host was booted with systemd (the check sd_booted(3) makes).
SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")
# Optional environment file of a service (mail and webhook credentials), per site slug.
ENV_FILE_TEMPLATE = "%h/.config/iomt-twin/{slug}.env"

_HEADER = "# Written by 'twin schedule add'."
_MARKER = "# iomt-twin:"


@dataclass
class Schedule:
    """One installed schedule, as :func:`list_schedules` finds it.

    Attributes
    ----------
    slug : str
        Site slug; the units are ``iomt-twin-<slug>.service`` and ``.timer``.
    kind : str
        ``"systemd"`` or ``"crontab"``.
    cron : str
        The cron expression the schedule was made from.
    command : str
        The command that runs one report cycle.
    paths : list of Path
        The unit files, or the crontab file.
    on_calendar : list of str
        The timer's ``OnCalendar=`` values (empty for crontab).
    """

    slug: str
    kind: str
    cron: str
    command: str
    paths: list[Path] = field(default_factory=list)
    on_calendar: list[str] = field(default_factory=list)


def site_slug(name: str) -> str:
    """Return the unit-name slug of a site name: lower case, runs of other characters as one ``-``.

    >>> site_slug("St. Mary's Hospital (North)")
    'st-mary-s-hospital-north'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "site"


def default_twin_command() -> str:
    """Return the absolute path of the ``twin`` console script, quoted as a shell word.

    ``sys.argv[0]`` when this process was started as ``twin``, else the
    ``twin`` beside the running Python interpreter, else the ``twin`` found
    on ``PATH``.

    Raises
    ------
    ConfigError
        When neither is found; pass ``twin_command`` instead.
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "twin" and argv0.is_file():
        return shlex.quote(str(argv0.absolute()))
    # The script beside the running interpreter works without PATH or a
    # pyenv shim, which a systemd user service does not have.
    beside = Path(sys.executable).parent / "twin"
    if beside.is_file():
        return shlex.quote(str(beside))
    found = shutil.which("twin")
    if found:
        return shlex.quote(str(Path(found).absolute()))
    raise ConfigError(
        "the 'twin' command was not found on PATH; install iomt-twin (pip install .) "
        "or pass the command to run, for example twin_command='/opt/venv/bin/twin'"
    )


def _systemd_quote(arg: str) -> str:
    """Quote one ExecStart= argument: double quotes when needed, and ``%`` doubled (systemd specifiers)."""
    text = arg.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cycle_args(twin_command: str, site_dir: Path, workspace: Path) -> list[str]:
    return [*shlex.split(twin_command), "schedule", "run", "--site", str(site_dir), "--workspace", str(workspace)]


def _unit_text(kind: str, *, site_name: str, site_dir: Path, cron: str, body: list[str]) -> str:
    lines = [
        _HEADER,
        f"# cron: {cron}",
        f"# site: {site_dir}",
        "",
        "[Unit]",
        f"Description=iomt-twin {kind} of the scheduled report of site {site_name}",
        *body,
    ]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def activation_command(paths: list[Path]) -> str:
    """Return the shell command that activates the schedule files :func:`add_schedule` wrote."""
    timers = [p for p in paths if p.suffix == ".timer"]
    if timers:
        return f"systemctl --user daemon-reload && systemctl --user enable --now {timers[0].name}"
    return f"crontab {shlex.quote(str(paths[0]))}"


def add_schedule(
    site_dir: str | Path,
    cron: str,
    *,
    workspace: str | Path,
    unit_dir: str | Path | None = None,
    crontab_file: str | Path | None = None,
    systemd: bool | None = None,
    twin_command: str | None = None,
    quiet: bool = False,
) -> list[Path]:
    """Write the files that run a report cycle of a site on a cron schedule.

    Parameters
    ----------
    site_dir : path
        Site folder holding ``site.yaml``; stored as an absolute path.
    cron : str
        Five-field cron expression or macro, for example ``"0 6 * * 1"``
        (Mondays 06:00, host local time).
    workspace : path
        Workspace file the cycle builds into; stored as an absolute path.
    unit_dir : path, optional
        Folder of the systemd units; default ``~/.config/systemd/user``.
    crontab_file : path, optional
        Crontab file to add the line to; default
        ``~/.config/iomt-twin/crontab``.
    systemd : bool, optional
        True writes systemd units, False a crontab line. None (the default)
        writes a crontab line when ``crontab_file`` is given, units when
        ``unit_dir`` is given, and otherwise units only when the host runs
        systemd (``/run/systemd/system`` exists).
    twin_command : str, optional
        Command that runs iomt-twin, split like a shell word list; default
        the absolute path of the ``twin`` console script.
    quiet : bool
        When False, print the command that activates the schedule to stderr.

    Returns
    -------
    list of Path
        The ``.service`` and ``.timer`` files, or the crontab file.

    Raises
    ------
    ValueError
        When ``cron`` is invalid (nothing is written).
    ConfigError
        When ``site.yaml`` is missing or invalid, or no ``twin`` command is found.

    Notes
    -----
    The files are only written. Activate them with the printed command
    (``systemctl --user daemon-reload && systemctl --user enable --now
    iomt-twin-<slug>.timer``, or ``crontab FILE``; the latter replaces the
    user's whole crontab with FILE).
    """
    on_calendar = cron_to_on_calendars(cron)
    # One blank between fields, so the crontab line and the unit comment read the same.
    cron = " ".join(cron.split())
    site_dir = Path(site_dir).absolute()
    workspace = Path(workspace).absolute()
    site = load_site(site_dir)
    slug = site_slug(site.site.name)
    args = _cycle_args(twin_command or default_twin_command(), site_dir, workspace)
    if systemd is None:
        systemd = crontab_file is None and (unit_dir is not None or SYSTEMD_RUNTIME_DIR.is_dir())

    if systemd:
        paths = _write_units(slug, site.site.name, site_dir, cron, on_calendar, args, unit_dir)
    else:
        paths = [_write_crontab_line(slug, cron, args, crontab_file)]
    command = activation_command(paths)
    log.info("schedule %r of site %r written to %s; activate it with: %s", cron, site.site.name, ", ".join(map(str, paths)), command)
    if not quiet:
        print(f"wrote {', '.join(map(str, paths))}\nactivate it with: {command}", file=sys.stderr)
    return paths


def _write_units(slug, site_name, site_dir, cron, on_calendar, args, unit_dir) -> list[Path]:
    folder = Path(unit_dir or DEFAULT_UNIT_DIR).expanduser()
    name = f"{UNIT_PREFIX}{slug}"
    service_body = [
        "",
        "[Service]",
        "Type=oneshot",
        "Nice=10",
        f"WorkingDirectory={_systemd_quote(str(site_dir))}",
        # Mail and webhook credentials; the leading "-" makes the file optional.
        f"EnvironmentFile=-{ENV_FILE_TEMPLATE.format(slug=slug)}",
        "ExecStart=" + " ".join(_systemd_quote(arg) for arg in args),
    ]
    timer_body = [
        "",
        "[Timer]",
        *(f"OnCalendar={value}" for value in on_calendar),
        "Persistent=true",
        "AccuracySec=1min",
        f"Unit={name}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    service = folder / f"{name}.service"
    timer = folder / f"{name}.timer"
    _write_atomic(service, _unit_text("cycle", site_name=site_name, site_dir=site_dir, cron=cron, body=service_body))
    _write_atomic(timer, _unit_text("timer", site_name=site_name, site_dir=site_dir, cron=cron, body=timer_body))
    return [service, timer]


def _crontab_command(args: list[str]) -> str:
    # cron turns an unescaped "%" into a newline, so it is escaped.
    return " ".join(shlex.quote(arg) for arg in args).replace("%", "\\%")


def _write_crontab_line(slug: str, cron: str, args: list[str], crontab_file) -> Path:
    path = Path(crontab_file or DEFAULT_CRONTAB_FILE).expanduser()
    marker = f"{_MARKER}{slug}"
    line = f"{cron} {_crontab_command(args)} {marker}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [existing for existing in lines if not existing.rstrip().endswith(marker)]
    kept.append(line)
    _write_atomic(path, "\n".join(kept) + "\n")
    return path


def remove_schedule(
    site: str | Path,
    *,
    unit_dir: str | Path | None = None,
    crontab_file: str | Path | None = None,
) -> list[Path]:
    """Delete the schedule of a site: its unit files and its crontab line.

    Parameters
    ----------
    site : str or path
        A site folder (its ``site.yaml`` gives the name), or a site slug.
    unit_dir, crontab_file : path, optional
        As in :func:`add_schedule`.

    Returns
    -------
    list of Path
        The unit files deleted and the crontab file changed; empty when the
        site had no schedule. A timer that is still enabled must be stopped
        with ``systemctl --user disable --now iomt-twin-<slug>.timer``.
    """
    slug = _slug_of(site)
    changed: list[Path] = []
    folder = Path(unit_dir or DEFAULT_UNIT_DIR).expanduser()
    for suffix in (".service", ".timer"):
        path = folder / f"{UNIT_PREFIX}{slug}{suffix}"
        if path.exists():
            path.unlink()
            changed.append(path)
    crontab = Path(crontab_file or DEFAULT_CRONTAB_FILE).expanduser()
    if crontab.exists():
        marker = f"{_MARKER}{slug}"
        lines = crontab.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if not line.rstrip().endswith(marker)]
        if len(kept) != len(lines):
            _write_atomic(crontab, "".join(f"{line}\n" for line in kept))
            changed.append(crontab)
    log.info("schedule of site slug %r removed: %s", slug, ", ".join(map(str, changed)) or "nothing found")
    return changed


def _slug_of(site: str | Path) -> str:
    path = Path(site)
    if path.is_dir() or path.name in ("site.yaml", "site.yml"):
        return site_slug(load_site(path).site.name)
    return site_slug(str(site))


def _parse_unit(text: str) -> dict[str, list[str]]:
    """Return ``Section.Key`` to its values, and ``#.key`` for this module's header comments."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# ") and ":" in line and not section:
            key, _, value = line[2:].partition(":")
            values.setdefault(f"#.{key.strip()}", []).append(value.strip())
        elif line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")) and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def list_schedules(*, unit_dir: str | Path | None = None, crontab_file: str | Path | None = None) -> list[Schedule]:
    """Return the schedules written by :func:`add_schedule`, systemd ones first, each sorted by slug."""
    found: list[Schedule] = []
    folder = Path(unit_dir or DEFAULT_UNIT_DIR).expanduser()
    if folder.is_dir():
        for timer in sorted(folder.glob(f"{UNIT_PREFIX}*.timer")):
            service = timer.with_suffix(".service")
            timer_values = _parse_unit(timer.read_text(encoding="utf-8"))
            service_values = _parse_unit(service.read_text(encoding="utf-8")) if service.exists() else {}
            found.append(
                Schedule(
                    slug=timer.stem[len(UNIT_PREFIX):],
                    kind="systemd",
                    cron=(timer_values.get("#.cron") or [""])[0],
                    command=(service_values.get("Service.ExecStart") or [""])[0],
                    paths=[service, timer] if service.exists() else [timer],
                    on_calendar=timer_values.get("Timer.OnCalendar", []),
                )
            )
    crontab = Path(crontab_file or DEFAULT_CRONTAB_FILE).expanduser()
    if crontab.exists():
        entries = []
        for line in crontab.read_text(encoding="utf-8").splitlines():
            body, marker, slug = line.rpartition(f" {_MARKER}")
            if not marker or not slug.strip() or line.lstrip().startswith("#"):
                continue
            fields = body.split(None, 1 if body.startswith("@") else 5)
            cron_fields = 1 if body.startswith("@") else 5
            entries.append(
                Schedule(
                    slug=slug.strip(),
                    kind="crontab",
                    cron=" ".join(fields[:cron_fields]),
                    command=fields[cron_fields] if len(fields) > cron_fields else "",
                    paths=[crontab],
                )
            )
        found.extend(sorted(entries, key=lambda entry: entry.slug))
    return found
