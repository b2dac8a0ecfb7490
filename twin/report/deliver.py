"""Delivery of a finished report run: folder retention, email and webhook.

:func:`deliver_all` runs every channel configured in ``reports:`` of
site.yaml and returns one :class:`DeliveryOutcome` per channel;
:func:`record_deliveries` stores them in the workspace table ``deliveries``.
A delivery only reads the report files. Connection, SMTP, HTTP and settings
errors are logged and returned as an outcome instead of raised, so one broken
channel does not stop the others.
"""

from __future__ import annotations

__all__ = [
    "CHANNELS",
    "RUN_FOLDER_MARKERS",
    "DeliveryOutcome",
    "deliver_all",
    "apply_retention",
    "build_email",
    "send_email",
    "post_webhook",
    "record_deliveries",
]

import http.client
import json
import logging
import os
import shutil
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from twin.exceptions import DeliveryError
from twin.model.site import EmailDelivery, Reports, WebhookDelivery

log = logging.getLogger(__name__)

#: Delivery channels, in the order :func:`deliver_all` runs them.
CHANNELS: tuple[str, ...] = ("folder", "email", "webhook")

#: A folder in ``reports.output_dir`` counts as a run folder (and may be deleted
#: by retention) only when it contains one of these files.
RUN_FOLDER_MARKERS: tuple[str, ...] = ("report.json", "report.html", "report.md")

# HTTP statuses retried besides 5xx: request timeout and rate limiting.
_RETRIED_4XX = frozenset({408, 429})

_CREATE_DELIVERIES = """
CREATE TABLE IF NOT EXISTS deliveries (
    run_id   TEXT NOT NULL,
    channel  TEXT NOT NULL,
    target   TEXT NOT NULL,
    ok       INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error    TEXT,
    at       REAL NOT NULL,
    PRIMARY KEY (run_id, channel, target, at)
)
"""


@dataclass
class DeliveryOutcome:
    """Result of one delivery channel for one report run.

    Attributes
    ----------
    channel : str
        ``folder``, ``email`` or ``webhook``.
    target : str
        Output folder, ``smtp://host:port`` or the webhook URL with its
        secret parts (user info, path after the first segment, query) removed.
    ok : bool
        True when the delivery succeeded.
    attempts : int
        Attempts made; 0 when the settings were incomplete and nothing was sent.
    error : str or None
        The last error: None when the first attempt succeeded, and kept on a
        success after retries so the record shows what failed first.
    at : float
        Time the delivery finished, seconds since the Unix epoch.
    """

    channel: str
    target: str
    ok: bool
    attempts: int
    error: str | None = None
    at: float = field(default_factory=time.time)


class _RetryableError(Exception):
    """A failure worth another attempt (server error, connection error, timeout)."""


class _PermanentError(Exception):
    """A failure that another attempt would repeat (HTTP 4xx, redirect)."""


def deliver_all(
    run_dir: Path,
    files: Mapping[str, Path],
    changes_summary: Mapping,
    reports: Reports,
    site_dir: Path,
    *,
    run_id: str,
    env: Mapping[str, str] = os.environ,
    ssl_context: ssl.SSLContext | None = None,
) -> list[DeliveryOutcome]:
    """Apply folder retention, then send the report by email and webhook when configured.

    Parameters
    ----------
    run_dir : Path
        Folder of the current report run; retention never deletes it.
    files : mapping of str to Path
        Report files by format key (``html``, ``md``, ``json``, ``pdf``), as
        returned by the report writer; missing keys fall back to
        ``report.<format>`` in ``run_dir``.
    changes_summary : mapping
        ``ChangeSet.summary()``; its site and counts go into the email subject.
    reports : Reports
        The ``reports:`` section of site.yaml.
    site_dir : Path
        Site folder; a relative ``reports.output_dir`` is resolved against it.
    run_id : str
        Run id written in every log line.
    env : mapping of str to str
        Environment read for credentials, webhook header values and proxies
        (``https_proxy``, ``http_proxy``, ``no_proxy``); defaults to ``os.environ``.
    ssl_context : ssl.SSLContext, optional
        Context for SMTP STARTTLS and HTTPS webhooks. Defaults to
        ``ssl.create_default_context()`` (system trust store, host name check);
        pass another to trust a private CA or a test certificate.

    Returns
    -------
    list of DeliveryOutcome
        One outcome for the folder, plus one for email and one for the webhook
        when configured.

    Notes
    -----
    Each channel retries ``retries`` times after the first attempt, waiting
    ``backoff_s``, ``2 * backoff_s``, ``4 * backoff_s``... seconds, so a
    channel can take up to about ``(retries + 1) * timeout_s + backoff_s * 2**retries`` seconds.
    """
    run_dir = Path(run_dir)
    context = ssl_context if ssl_context is not None else ssl.create_default_context()
    outcomes = [apply_retention(reports, Path(site_dir), run_dir, run_id=run_id)]
    if reports.email is not None:
        outcomes.append(send_email(reports.email, run_dir, files, changes_summary, run_id=run_id, env=env, ssl_context=context))
    if reports.webhook is not None:
        outcomes.append(post_webhook(reports.webhook, run_dir, files, run_id=run_id, env=env, ssl_context=context))
    return outcomes


# -- folder retention -------------------------------------------------------


def apply_retention(reports: Reports, site_dir: Path, run_dir: Path, *, run_id: str) -> DeliveryOutcome:
    """Delete the oldest run folders of ``reports.output_dir`` beyond ``reports.keep``.

    Run folders are the subfolders holding one of :data:`RUN_FOLDER_MARKERS`;
    symbolic links (such as ``latest``), hidden folders (temporary ones) and
    ``run_dir`` itself are never deleted. Age is the folder name order, which
    is time order for run ids (``YYYYmmddTHHMMSSZ-xxxxxx``).

    Returns
    -------
    DeliveryOutcome
        Channel ``folder``; ``ok`` is False when a folder could not be deleted.
    """
    output_dir = _output_dir(reports, site_dir)
    current = run_dir.resolve()
    target = str(output_dir)
    if not output_dir.is_dir():
        log.info("run %s: folder %s: no output folder yet, nothing to prune", run_id, output_dir)
        return DeliveryOutcome("folder", target, ok=True, attempts=1)

    try:
        runs = sorted(path for path in output_dir.iterdir() if _is_run_folder(path))
    except OSError as exc:
        log.warning("run %s: folder %s: cannot list run folders: %s", run_id, output_dir, exc)
        return DeliveryOutcome("folder", target, ok=False, attempts=1, error=f"{output_dir}: {exc}")
    others = [path for path in runs if path.resolve() != current]
    # The current run takes one of the kept places.
    keep_others = reports.keep - 1 if any(path.resolve() == current for path in runs) else reports.keep
    expired = others[: max(0, len(others) - keep_others)]

    errors = []
    for path in expired:
        try:
            shutil.rmtree(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            log.warning("run %s: folder %s: cannot delete old run folder %s: %s", run_id, output_dir, path.name, exc)
        else:
            log.info("run %s: folder %s: deleted old run folder %s (keep %d)", run_id, output_dir, path.name, reports.keep)
    if errors:
        return DeliveryOutcome("folder", target, ok=False, attempts=1, error="; ".join(errors))
    return DeliveryOutcome("folder", target, ok=True, attempts=1)


def _output_dir(reports: Reports, site_dir: Path) -> Path:
    output_dir = Path(reports.output_dir).expanduser()
    if not output_dir.is_absolute():
        output_dir = site_dir / output_dir
    return output_dir


def _is_run_folder(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir() or path.name.startswith("."):
        return False
    return any((path / marker).is_file() for marker in RUN_FOLDER_MARKERS)


# -- email ------------------------------------------------------------------


def build_email(
    email: EmailDelivery, run_dir: Path, files: Mapping[str, Path], changes_summary: Mapping, *, run_id: str
) -> EmailMessage:
    """Compose the report email: HTML report as the body, Markdown as its text alternative.

    ``report.md``, ``report.json`` and ``report.pdf`` are attached when they exist.
    """
    message = EmailMessage()
    message["Subject"] = _subject(changes_summary, _site_name(files, run_dir, changes_summary), run_id)
    message["From"] = email.sender
    message["To"] = ", ".join(email.to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=email.sender.rpartition("@")[2] or None)

    html_path = _report_file(files, run_dir, "html")
    md_path = _report_file(files, run_dir, "md")
    text = md_path.read_text(encoding="utf-8") if md_path else f"{message['Subject']}\n\nThe report files are attached.\n"
    message.set_content(text)
    if html_path:
        message.add_alternative(html_path.read_text(encoding="utf-8"), subtype="html")

    if md_path:
        message.add_attachment(md_path.read_bytes(), maintype="text", subtype="markdown", filename="report.md")
    json_path = _report_file(files, run_dir, "json")
    if json_path:
        message.add_attachment(json_path.read_bytes(), maintype="application", subtype="json", filename="report.json")
    pdf_path = _report_file(files, run_dir, "pdf")
    if pdf_path:
        message.add_attachment(pdf_path.read_bytes(), maintype="application", subtype="pdf", filename="report.pdf")
    return message


def send_email(
    email: EmailDelivery,
    run_dir: Path,
    files: Mapping[str, Path],
    changes_summary: Mapping,
    *,
    run_id: str,
    env: Mapping[str, str] = os.environ,
    ssl_context: ssl.SSLContext | None = None,
) -> DeliveryOutcome:
    """Send the report by SMTP with retries; see :func:`deliver_all` for the parameters.

    The login happens only when ``username_env`` is set; both variables are
    then read from ``env`` and their values are never logged.
    """
    target = f"smtp://{email.host}:{email.port}"
    try:
        credentials = _smtp_credentials(email, env)
        message = build_email(email, run_dir, files, changes_summary, run_id=run_id)
    except (DeliveryError, OSError, ValueError) as exc:
        log.warning("run %s: email to %s: not sent: %s", run_id, target, exc)
        return DeliveryOutcome("email", target, ok=False, attempts=0, error=str(exc))
    context = ssl_context if ssl_context is not None else ssl.create_default_context()

    def attempt() -> None:
        try:
            with smtplib.SMTP(email.host, email.port, timeout=email.timeout_s) as smtp:
                smtp.ehlo()
                if email.starttls:
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if credentials:
                    smtp.login(*credentials)
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise _RetryableError(_describe(exc)) from None

    return _with_retries("email", target, attempt, email.retries, email.backoff_s, run_id=run_id)


def _smtp_credentials(email: EmailDelivery, env: Mapping[str, str]) -> tuple[str, str] | None:
    if not email.username_env:
        return None
    if not email.password_env:
        raise DeliveryError(
            f"reports.email.username_env is {email.username_env!r} but password_env is not set; "
            "name the environment variable that holds the SMTP password"
        )
    return _env_value(env, email.username_env, "reports.email.username_env"), _env_value(
        env, email.password_env, "reports.email.password_env"
    )


def _subject(changes_summary: Mapping, site: str | None, run_id: str) -> str:
    where = f" for {site}" if site else ""
    if changes_summary.get("first_run"):
        return f"iomt-twin first report{where}: no earlier snapshot to compare with (run {run_id})"
    new = _count(changes_summary.get("findings_new"))
    resolved = _count(changes_summary.get("findings_resolved"))
    devices = [
        f"{changes_summary[key]} devices {label}"
        for key, label in (("devices_new", "new"), ("devices_gone", "gone"), ("devices_changed", "changed"))
        if changes_summary.get(key)
    ]
    tail = f"; {', '.join(devices)}" if devices else ""
    return f"iomt-twin report{where}: {new} new, {resolved} resolved findings{tail} (run {run_id})"


def _site_name(files: Mapping[str, Path], run_dir: Path, changes_summary: Mapping) -> str | None:
    """Site name from the change summary, else from the top-level ``site`` of report.json."""
    if changes_summary.get("site"):
        return str(changes_summary["site"])
    json_path = _report_file(files, run_dir, "json")
    if json_path is None:
        return None
    try:
        document = json.loads(json_path.read_bytes())
    except (OSError, ValueError):
        return None
    site = document.get("site") if isinstance(document, dict) else None
    return str(site) if site else None


def _count(value) -> int:
    """Total of a count or of a mapping of counts (per query); 0 for anything else."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return sum(_count(item) for item in value.values())
    return 0


# -- webhook ----------------------------------------------------------------


def post_webhook(
    webhook: WebhookDelivery,
    run_dir: Path,
    files: Mapping[str, Path],
    *,
    run_id: str,
    env: Mapping[str, str] = os.environ,
    ssl_context: ssl.SSLContext | None = None,
) -> DeliveryOutcome:
    """POST ``report.json`` to the webhook URL with retries; see :func:`deliver_all`.

    A 2xx status is success. 5xx, 408, 429, connection errors and timeouts
    are retried; any other status (4xx, and 3xx because redirects are not
    followed) fails at once.
    """
    target = _redact_url(webhook.url)
    try:
        headers = {name: _env_value(env, variable, f"reports.webhook.headers_env[{name!r}]")
                   for name, variable in webhook.headers_env.items()}
        json_path = _report_file(files, run_dir, "json")
        if json_path is None:
            raise DeliveryError(f"{run_dir}: report.json not found; add 'json' to reports.formats for webhook delivery")
        body = json_path.read_bytes()
    except (DeliveryError, OSError) as exc:
        log.warning("run %s: webhook %s: not sent: %s", run_id, target, exc)
        return DeliveryOutcome("webhook", target, ok=False, attempts=0, error=str(exc))

    headers = {"User-Agent": "iomt-twin", **headers, "Content-Type": "application/json"}
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(_proxies_for(webhook.url, env)),
        urllib.request.HTTPSHandler(context=ssl_context if ssl_context is not None else ssl.create_default_context()),
        _NoRedirect(),
    )

    def attempt() -> None:
        request = urllib.request.Request(webhook.url, data=body, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=webhook.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise _RetryableError(_describe(exc)) from None
        if 200 <= status < 300:
            return
        error = f"HTTP status {status}"
        if status >= 500 or status in _RETRIED_4XX:
            raise _RetryableError(error)
        raise _PermanentError(error)

    return _with_retries("webhook", target, attempt, webhook.retries, webhook.backoff_s, run_id=run_id)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turn redirects into errors, because urllib would resend a POST as a GET without its body."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def _proxies_for(url: str, env: Mapping[str, str]) -> dict[str, str]:
    """Proxies from ``env`` (lower-case names first), honouring ``no_proxy``."""
    proxies = {}
    for scheme in ("http", "https"):
        value = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
        if value:
            proxies[scheme] = value
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY")
    host = urllib.parse.urlsplit(url).hostname or ""
    if proxies and no_proxy and urllib.request.proxy_bypass_environment(host, {"no": no_proxy}):
        return {}
    return proxies


def _redact_url(url: str) -> str:
    """Keep scheme, host, port and the first path segment; the rest of many webhook URLs is a secret token."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    segments = [segment for segment in parts.path.split("/") if segment]
    path = "/"
    if segments:
        path = f"/{segments[0]}" + ("/..." if len(segments) > 1 else "")
    if parts.query:
        path += "?..."
    return f"{parts.scheme}://{netloc}{path}"


# -- shared helpers ---------------------------------------------------------


def _with_retries(
    channel: str, target: str, attempt: Callable[[], None], retries: int, backoff_s: float, *, run_id: str
) -> DeliveryOutcome:
    """Call ``attempt`` up to ``retries + 1`` times with exponential backoff and log each attempt."""
    total = retries + 1
    error = None
    for number in range(1, total + 1):
        log.info("run %s: %s to %s: attempt %d of %d", run_id, channel, target, number, total)
        try:
            attempt()
        except _PermanentError as exc:
            error = str(exc)
            log.warning("run %s: %s to %s: attempt %d of %d failed, not retried: %s",
                        run_id, channel, target, number, total, error)
            return DeliveryOutcome(channel, target, ok=False, attempts=number, error=error)
        except _RetryableError as exc:
            error = str(exc)
            log.warning("run %s: %s to %s: attempt %d of %d failed: %s", run_id, channel, target, number, total, error)
            if number < total:
                time.sleep(backoff_s * 2 ** (number - 1))
            continue
        log.info("run %s: %s to %s: delivered on attempt %d", run_id, channel, target, number)
        # A success after retries keeps the last failure, so the record shows why it took several attempts.
        return DeliveryOutcome(channel, target, ok=True, attempts=number, error=error)
    log.warning("run %s: %s to %s: giving up after %d attempts", run_id, channel, target, total)
    return DeliveryOutcome(channel, target, ok=False, attempts=total, error=error)


def _env_value(env: Mapping[str, str], variable: str, setting: str) -> str:
    value = env.get(variable)
    if value is None:
        raise DeliveryError(
            f"environment variable {variable!r} (named by {setting}) is not set; "
            "export it in the environment of the scheduled job"
        )
    return value


def _report_file(files: Mapping[str, Path], run_dir: Path, fmt: str) -> Path | None:
    path = files.get(fmt)
    path = Path(path) if path is not None else run_dir / f"report.{fmt}"
    return path if path.is_file() else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        detail = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{type(exc).__name__}: {exc.smtp_code} {detail}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{rcpt}: {code} {msg.decode('utf-8', 'replace')}" for rcpt, (code, msg) in exc.recipients.items())
        return f"SMTPRecipientsRefused: {refused}"
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return f"URLError: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


# -- workspace record -------------------------------------------------------


def record_deliveries(store, run_id: str, outcomes: list[DeliveryOutcome]) -> None:
    """Store the outcomes of one report run in the workspace table ``deliveries``.

    Parameters
    ----------
    store : EmbeddedStore
        Open workspace; the table is created when missing.
    run_id : str
        Report run the outcomes belong to.
    outcomes : list of DeliveryOutcome
        As returned by :func:`deliver_all`. Recording the same outcome twice
        keeps one row, keyed by run id, channel, target and time.
    """
    rows = [
        (run_id, outcome.channel, outcome.target, int(outcome.ok), outcome.attempts, outcome.error, outcome.at)
        for outcome in outcomes
    ]
    with store.transaction() as cur:
        cur.execute(_CREATE_DELIVERIES)
        cur.executemany("INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    log.info("run %s: recorded %d delivery outcomes: %s", run_id, len(rows),
             json.dumps([{k: v for k, v in asdict(o).items() if k in ("channel", "ok", "attempts")} for o in outcomes]))
