"""Schedule files: systemd user units and crontab lines, written into tmp_path only."""

from __future__ import annotations

import configparser
import shlex
import shutil
from pathlib import Path

import pytest

from twin.exceptions import ConfigError
from twin.schedule.units import add_schedule, list_schedules, remove_schedule, site_slug

SAMPLE = Path(__file__).resolve().parents[2] / "sample_networks" / "pair" / "violating"
SLUG = "northbrook-clinic"  # the sample's site name is "Northbrook Clinic"
TWIN = "/opt/iomt twin/bin/twin"  # a blank in the path, to check quoting
TWIN_COMMAND = shlex.quote(TWIN)


def read_unit(path: Path) -> configparser.ConfigParser:
    """Parse a unit file. systemd allows repeated keys (OnCalendar=), whose values are joined by newlines."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, dict_type=_MultiDict)
    parser.optionxform = str
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


class _MultiDict(dict):
    """Section mapping that keeps every value of a repeated key, as configparser does for continuation lines."""

    def __setitem__(self, key, value):
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


@pytest.fixture()
def site(tmp_path):
    target = tmp_path / "site dir"
    target.mkdir()
    shutil.copy(SAMPLE / "site.yaml", target / "site.yaml")
    return target


def test_site_slug():
    assert site_slug("Northbrook Clinic") == SLUG
    assert site_slug("St. Mary's -- East/2") == "st-mary-s-east-2"
    assert site_slug("...") == "site"


def test_add_schedule_systemd_units(site, tmp_path):
    units = tmp_path / "units"
    workspace = tmp_path / "ws" / "w.sqlite"
    paths = add_schedule(site, "0 6 * * 1", workspace=workspace, unit_dir=units, systemd=True, twin_command=TWIN_COMMAND, quiet=True)

    assert paths == [units / f"iomt-twin-{SLUG}.service", units / f"iomt-twin-{SLUG}.timer"]
    service = read_unit(paths[0])
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["Nice"] == "10"
    assert shlex.split(service["Service"]["ExecStart"]) == [
        TWIN, "schedule", "run", "--site", str(site.absolute()), "--workspace", str(workspace.absolute()),
    ]
    timer = read_unit(paths[1])
    assert dict(timer["Timer"]) == {
        "OnCalendar": "Mon *-*-* 06:00:00",
        "Persistent": "true",
        "AccuracySec": "1min",
        "Unit": f"iomt-twin-{SLUG}.service",
    }
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_add_schedule_either_or_days_two_lines(site, tmp_path):
    paths = add_schedule(site, "30 2 1,15 * sun", workspace=tmp_path / "w.sqlite", unit_dir=tmp_path, systemd=True,
                         twin_command=TWIN_COMMAND, quiet=True)
    values = read_unit(paths[1])["Timer"]["OnCalendar"].splitlines()
    assert values == ["*-*-01,15 02:30:00", "Sun *-*-* 02:30:00"]


def test_add_schedule_invalid_cron_writes_nothing(site, tmp_path):
    units = tmp_path / "units"
    with pytest.raises(ValueError, match="day-of-week"):
        add_schedule(site, "0 6 * * 9", workspace=tmp_path / "w.sqlite", unit_dir=units, systemd=True, twin_command=TWIN_COMMAND)
    assert not units.exists()


def test_add_schedule_missing_site(tmp_path):
    with pytest.raises(ConfigError):
        add_schedule(tmp_path / "nowhere", "0 6 * * 1", workspace=tmp_path / "w.sqlite", unit_dir=tmp_path,
                     systemd=True, twin_command=TWIN_COMMAND)


def test_add_schedule_crontab_line(site, tmp_path):
    crontab = tmp_path / "crontab"
    crontab.write_text("MAILTO=ops@example.org\n15 1 * * * /usr/bin/backup # not ours\n")
    workspace = tmp_path / "w.sqlite"
    paths = add_schedule(site, "0 6 * * 1", workspace=workspace, crontab_file=crontab, systemd=False,
                         twin_command=TWIN_COMMAND, quiet=True)

    assert paths == [crontab]
    lines = crontab.read_text().splitlines()
    assert lines[:2] == ["MAILTO=ops@example.org", "15 1 * * * /usr/bin/backup # not ours"]
    assert len(lines) == 3
    fields = lines[2].split(" ", 5)
    assert fields[:5] == ["0", "6", "*", "*", "1"]
    command, marker = fields[5].rsplit(" # ", 1)
    assert marker == f"iomt-twin:{SLUG}"
    assert shlex.split(command) == [
        TWIN, "schedule", "run", "--site", str(site.absolute()), "--workspace", str(workspace.absolute()),
    ]


def test_add_schedule_crontab_replaces_own_line(site, tmp_path):
    crontab = tmp_path / "crontab"
    for cron in ("0 6 * * 1", "@daily", "0 7 * * 2"):
        add_schedule(site, cron, workspace=tmp_path / "w.sqlite", crontab_file=crontab, twin_command=TWIN_COMMAND, quiet=True)
    lines = crontab.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("0 7 * * 2 ")


def test_crontab_percent_escaped(site, tmp_path):
    crontab = tmp_path / "crontab"
    add_schedule(site, "@daily", workspace=tmp_path / "100%" / "w.sqlite", crontab_file=crontab, twin_command=TWIN_COMMAND,
                 quiet=True)
    line = crontab.read_text()
    assert "100\\%" in line
    assert "100%" not in line.replace("100\\%", "")


def test_systemd_percent_doubled(site, tmp_path):
    paths = add_schedule(site, "@daily", workspace=tmp_path / "100%" / "w.sqlite", unit_dir=tmp_path, systemd=True,
                         twin_command=TWIN_COMMAND, quiet=True)
    assert "100%%" in read_unit(paths[0])["Service"]["ExecStart"]


def test_activation_command_printed(site, tmp_path, capsys):
    add_schedule(site, "0 6 * * 1", workspace=tmp_path / "w.sqlite", unit_dir=tmp_path, systemd=True, twin_command=TWIN_COMMAND)
    assert f"systemctl --user daemon-reload && systemctl --user enable --now iomt-twin-{SLUG}.timer" in capsys.readouterr().err
    add_schedule(site, "0 6 * * 1", workspace=tmp_path / "w.sqlite", crontab_file=tmp_path / "tab", twin_command=TWIN_COMMAND)
    assert f"crontab {tmp_path / 'tab'}" in capsys.readouterr().err


def test_list_and_remove_schedules(site, tmp_path):
    units, crontab = tmp_path / "units", tmp_path / "crontab"
    crontab.write_text("15 1 * * * /usr/bin/backup\n")
    add_schedule(site, "0 6 * * 1", workspace=tmp_path / "w.sqlite", unit_dir=units, systemd=True, twin_command=TWIN_COMMAND, quiet=True)
    add_schedule(site, "*/30 * * * *", workspace=tmp_path / "w.sqlite", crontab_file=crontab, twin_command=TWIN_COMMAND, quiet=True)

    found = list_schedules(unit_dir=units, crontab_file=crontab)
    assert [(s.slug, s.kind, s.cron, s.on_calendar) for s in found] == [
        (SLUG, "systemd", "0 6 * * 1", ["Mon *-*-* 06:00:00"]),
        (SLUG, "crontab", "*/30 * * * *", []),
    ]
    assert all("schedule run --site" in s.command for s in found)

    removed = remove_schedule(site, unit_dir=units, crontab_file=crontab)
    assert removed == [units / f"iomt-twin-{SLUG}.service", units / f"iomt-twin-{SLUG}.timer", crontab]
    assert list_schedules(unit_dir=units, crontab_file=crontab) == []
    assert crontab.read_text() == "15 1 * * * /usr/bin/backup\n"
    assert remove_schedule(SLUG, unit_dir=units, crontab_file=crontab) == []


def test_default_detection_uses_crontab_when_file_given(site, tmp_path):
    paths = add_schedule(site, "@weekly", workspace=tmp_path / "w.sqlite", unit_dir=tmp_path / "units",
                         crontab_file=tmp_path / "tab", twin_command=TWIN_COMMAND, quiet=True)
    assert paths == [tmp_path / "tab"]
    assert not (tmp_path / "units").exists()


def test_default_detection_uses_units_when_dir_given(site, tmp_path):
    paths = add_schedule(site, "@weekly", workspace=tmp_path / "w.sqlite", unit_dir=tmp_path / "units",
                         twin_command=TWIN_COMMAND, quiet=True)
    assert [path.name for path in paths] == [f"iomt-twin-{SLUG}.service", f"iomt-twin-{SLUG}.timer"]


def test_default_twin_command_is_installed_script():
    from twin.schedule.units import default_twin_command

    words = shlex.split(default_twin_command())
    assert len(words) == 1
    assert Path(words[0]).is_absolute()
    assert Path(words[0]).is_file()
