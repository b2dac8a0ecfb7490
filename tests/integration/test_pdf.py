"""Integration tests of twin.report.pdf with the real Debian chromium and poppler's pdftoppm."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from twin.exceptions import ReportError
from twin.report import ReportContext, TwinCounts, write_report
from twin.report import pdf as pdf_module
from twin.report.pdf import find_chromium, render_pdf

# Share of page-1 pixels that must be darker than DARK_LEVEL for the page to count
# as printed. Text, table rules and badges of a short report cover a few percent.
MIN_DARK_SHARE = 0.005
DARK_LEVEL = 128
RENDER_TIMEOUT_S = 90.0

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
    reason="chromium not installed; run scripts/install-system-deps.sh",
)
needs_pdftoppm = pytest.mark.skipif(
    shutil.which("pdftoppm") is None, reason="pdftoppm not installed; run scripts/install-system-deps.sh"
)


def _findings() -> dict[str, pd.DataFrame]:
    return {
        "misplaced_devices": pd.DataFrame(
            [
                {"device_id": "d1", "hostname": "pump-icu-07", "device_class": "infusion_pump",
                 "segment_id": "guest-wifi", "severity": "critical",
                 "evidence": "class infusion_pump not designated for guest-wifi"},
                {"device_id": "d2", "hostname": "monitor-ward3", "device_class": "patient_monitor",
                 "segment_id": "office", "severity": "high", "evidence": "class patient_monitor in office"},
            ]
        ),
        "segment_violations": pd.DataFrame(
            [
                {"src_id": "d9", "dst_id": "d1", "proto": "tcp", "dst_port": 443, "rule": "deny-guest",
                 "severity": "high", "evidence": "flow seen 2024-05-01"},
            ]
        ),
    }


def _write_html(out_dir: Path) -> Path:
    context = ReportContext(site="St. Example Hospital", run_id="run-pdf-test", built_at=1_714_550_400.0,
                            counts=TwinCounts())
    files = write_report(_findings(), context, out_dir, formats=("html",), generated_at=1_714_550_400.0)
    return files["html"]


def _read_pgm(path: Path) -> tuple[int, int, bytes]:
    """Parse a binary (P5) PGM file into width, height and 8-bit pixels."""
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        start = pos
        while not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    assert magic == b"P5", f"expected a binary PGM, got magic {magic!r}"
    assert maxval == 255, f"expected 8-bit gray levels, got maxval {maxval}"
    pixels = data[pos + 1:]
    assert len(pixels) == width * height
    return width, height, pixels


@needs_chromium
@needs_pdftoppm
def test_render_pdf_prints_report(tmp_path: Path) -> None:
    html_path = _write_html(tmp_path / "run")
    pdf_path = tmp_path / "run" / "report.pdf"

    result = render_pdf(html_path, pdf_path, timeout_s=RENDER_TIMEOUT_S)

    assert result == pdf_path
    assert pdf_path.read_bytes().startswith(b"%PDF")
    leftovers = sorted(p.name for p in pdf_path.parent.iterdir() if p.name.endswith(".tmp"))
    assert leftovers == []

    image_base = tmp_path / "page1"
    subprocess.run(
        ["pdftoppm", "-r", "50", "-gray", "-f", "1", "-l", "1", "-singlefile", str(pdf_path), str(image_base)],
        check=True,
        timeout=60,
    )
    width, height, pixels = _read_pgm(image_base.with_suffix(".pgm"))
    assert width > 100
    assert height > 100
    dark = sum(1 for value in pixels if value < DARK_LEVEL)
    assert dark / len(pixels) >= MIN_DARK_SHARE, f"page 1 is nearly blank: {dark} dark of {len(pixels)} pixels"


@needs_chromium
def test_render_pdf_replaces_existing_file(tmp_path: Path) -> None:
    html_path = _write_html(tmp_path)
    pdf_path = tmp_path / "report.pdf"
    pdf_path.write_bytes(b"old contents")

    render_pdf(html_path, pdf_path, timeout_s=RENDER_TIMEOUT_S)

    assert pdf_path.read_bytes().startswith(b"%PDF")


def test_render_pdf_missing_html(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="HTML report not found"):
        render_pdf(tmp_path / "absent.html", tmp_path / "report.pdf")


def test_missing_chromium_names_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    html_path = tmp_path / "report.html"
    html_path.write_text("<html><body>x</body></html>", encoding="utf-8")
    monkeypatch.setattr(pdf_module, "CHROMIUM_CANDIDATES", (str(tmp_path / "no-such-chromium"),))

    with pytest.raises(ReportError, match="install Debian's chromium package"):
        render_pdf(html_path, tmp_path / "report.pdf")
    assert not (tmp_path / "report.pdf").exists()


@needs_chromium
def test_render_pdf_timeout_leaves_no_file(tmp_path: Path) -> None:
    html_path = _write_html(tmp_path)
    pdf_path = tmp_path / "report.pdf"

    # No browser starts and prints within a millisecond, so this always times out.
    with pytest.raises(ReportError, match="timed out"):
        render_pdf(html_path, pdf_path, timeout_s=0.001)

    assert not pdf_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_find_chromium_returns_executable() -> None:
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.skip("chromium not installed")
    assert Path(find_chromium()).is_file()
