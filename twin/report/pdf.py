"""PDF rendering of an HTML report with headless Chromium.

The HTML report is self-contained (inline CSS and SVG, no external URL), so
Chromium prints it from a ``file://`` URL with its background networking,
component updates and sync turned off and a fresh profile folder per call.
"""

from __future__ import annotations

__all__ = ["BROWSER_FLAGS", "CHROMIUM_CANDIDATES", "DEFAULT_TIMEOUT_S", "CHROMIUM_FLAGS", "find_chromium", "render_pdf"]

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from twin.exceptions import ReportError

log = logging.getLogger(__name__)

#: Chromium executables tried in order: Debian's wrapper first, then PATH.
CHROMIUM_CANDIDATES: tuple[str, ...] = ("/usr/bin/chromium", "chromium", "chromium-browser")

#: Default limit for one Chromium run, in seconds (60).
DEFAULT_TIMEOUT_S: float = 60.0

#: Flags for headless Chromium on a machine without internet access: without
#: the background-networking ones it keeps trying to reach Google's hosts.
#: The app's browser test and the map benchmark use them too.
BROWSER_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Flags passed to every PDF run, besides the profile folder and the output path.
CHROMIUM_FLAGS: tuple[str, ...] = (*BROWSER_FLAGS, "--no-pdf-header-footer")

# Seconds to wait for Chromium to exit after SIGKILL before giving up on it.
_KILL_WAIT_S = 5.0


def find_chromium() -> str:
    """Locate the Chromium executable.

    Returns
    -------
    str
        Absolute path of the first of :data:`CHROMIUM_CANDIDATES` that exists.

    Raises
    ------
    ReportError
        When no Chromium is installed.
    """
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise ReportError(
        f"chromium not found (tried {', '.join(CHROMIUM_CANDIDATES)}); PDF reports need it: "
        "install Debian's chromium package (sudo apt-get install chromium, or scripts/install-system-deps.sh) "
        "or remove 'pdf' from reports.formats"
    )


def render_pdf(html_path: Path, pdf_path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Path:
    """Print an HTML file to PDF with headless Chromium, atomically.

    Parameters
    ----------
    html_path : Path
        The HTML report to print; it must exist.
    pdf_path : Path
        Output file. Chromium writes a temporary file in the same folder,
        which replaces ``pdf_path`` only when it is a complete PDF.
    timeout_s : float
        Seconds Chromium may run; on expiry its process group is killed.

    Returns
    -------
    Path
        ``pdf_path``.

    Raises
    ------
    ReportError
        When Chromium is missing, exits with an error, times out or writes no PDF.

    Notes
    -----
    Each call starts a browser with a new temporary profile folder, which
    takes one to a few seconds and about 200 MB of memory while it runs.
    """
    html_path = Path(html_path).resolve()
    pdf_path = Path(pdf_path)
    if not html_path.is_file():
        raise ReportError(f"{html_path}: HTML report not found; write the HTML report before rendering the PDF")
    if timeout_s <= 0:
        raise ReportError(f"invalid timeout_s {timeout_s!r}; expected a positive number of seconds")
    chromium = find_chromium()

    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{pdf_path.name}.", suffix=".tmp", dir=pdf_path.parent)
    os.close(fd)
    tmp_pdf = Path(tmp_name)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="twin-chromium-") as profile:
            command = [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--print-to-pdf={tmp_pdf}",
                html_path.as_uri(),
            ]
            _run_chromium(command, html_path, timeout_s)
        _check_pdf(tmp_pdf, html_path)
        os.chmod(tmp_pdf, 0o644)  # mkstemp creates 0600; match the other report files
        os.replace(tmp_pdf, pdf_path)
    finally:
        tmp_pdf.unlink(missing_ok=True)
    log.info("rendered %s to %s in %.1f s", html_path.name, pdf_path, time.monotonic() - started)
    return pdf_path


def _run_chromium(command: list[str], html_path: Path, timeout_s: float) -> None:
    """Run Chromium in its own process group and kill that group on timeout."""
    # A new session makes the browser's pid a process group id, so a timeout
    # can kill the renderer and GPU helpers that this call started too.
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise ReportError(
            f"{html_path}: chromium timed out after {timeout_s:g} s while printing to PDF; "
            "raise timeout_s or check that the HTML report loads no remote resource"
        ) from None
    if process.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise ReportError(
            f"{html_path}: chromium exited with status {process.returncode} while printing to PDF: "
            + " | ".join(tail)
        )


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the process group led by ``process`` (started by this module) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.communicate(timeout=_KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        log.warning("chromium (pid %d) did not exit %g s after SIGKILL", process.pid, _KILL_WAIT_S)


def _check_pdf(tmp_pdf: Path, html_path: Path) -> None:
    """Raise ReportError unless ``tmp_pdf`` starts with the PDF signature."""
    with tmp_pdf.open("rb") as handle:
        head = handle.read(5)
    if head != b"%PDF-":
        raise ReportError(
            f"{html_path}: chromium exited without writing a PDF (output starts with {head!r}); "
            "check that the file is valid HTML and that chromium runs: chromium --headless --version"
        )
