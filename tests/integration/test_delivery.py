"""Integration tests of twin.report.deliver against real SMTP and HTTP servers on 127.0.0.1.

The SMTP server is aiosmtpd with STARTTLS (a self-signed certificate made in
the test with ``cryptography``) and AUTH; the webhook server is http.server in
a thread. Both listen on a free loopback port and nothing else is contacted.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import http.server
import ipaddress
import json
import logging
import socket
import ssl
import threading
from pathlib import Path

import pandas as pd
import pytest

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")
x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from twin.graph.embedded import EmbeddedStore  # noqa: E402
from twin.model.site import Reports  # noqa: E402
from twin.report import ReportContext, TwinCounts, write_report  # noqa: E402
from twin.report.deliver import DeliveryOutcome, deliver_all, record_deliveries  # noqa: E402

RUN_ID = "20240501T060000Z-abc123"
LOOPBACK = "127.0.0.1"
BACKOFF_S = 0.05
PDF_BYTES = b"%PDF-1.4\n% test attachment, not a rendered report\n%%EOF\n"
ENV = {"TWIN_SMTP_USER": "reports@hospital.example", "TWIN_SMTP_PASSWORD": "s3cret-pw", "TWIN_HOOK_TOKEN": "Bearer t0ken"}


# -- fixtures ---------------------------------------------------------------


def _free_port() -> int:
    # NOTE: the port is released before the server binds it, so another
    # process could take it in between; the window lasts until controller.start() binds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A report run folder with report.html, .md, .json and .pdf."""
    findings = {
        "misplaced_devices": pd.DataFrame(
            [{"device_id": "d1", "hostname": "pump-icu-07", "device_class": "infusion_pump",
              "segment_id": "guest-wifi", "severity": "critical", "evidence": "class not designated"}]
        )
    }
    context = ReportContext(site="St. Example", run_id=RUN_ID, built_at=1_714_543_200.0, counts=TwinCounts())
    out = tmp_path / "site" / "reports" / RUN_ID
    write_report(findings, context, out, formats=("html", "md", "json"), generated_at=1_714_543_200.0)
    (out / "report.pdf").write_bytes(PDF_BYTES)
    return out


def _files(run_dir: Path) -> dict[str, Path]:
    return {fmt: run_dir / f"report.{fmt}" for fmt in ("html", "md", "json", "pdf")}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "cert.pem"
    key_path = folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class RecordingHandler:
    """aiosmtpd handler that stores each message, or rejects DATA with ``reply``."""

    def __init__(self, reply: str = "250 OK") -> None:
        self.reply = reply
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd hook name)
        self.envelopes.append(envelope)
        return self.reply


class RecordingAuthenticator:
    """aiosmtpd authenticator that accepts one login and records every try."""

    def __init__(self, login: str, password: str) -> None:
        self.expected = (login.encode(), password.encode())
        self.tries: list[tuple[str, bytes, bytes]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.tries.append((mechanism, auth_data.login, auth_data.password))
        return aiosmtpd_smtp.AuthResult(success=(auth_data.login, auth_data.password) == self.expected)


@pytest.fixture
def smtp_server(tls_material):
    """STARTTLS-required SMTP server with AUTH on a free loopback port."""
    cert_path, key_path = tls_material
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    handler = RecordingHandler()
    authenticator = RecordingAuthenticator(ENV["TWIN_SMTP_USER"], ENV["TWIN_SMTP_PASSWORD"])
    controller = aiosmtpd_controller.Controller(
        handler,
        hostname=LOOPBACK,
        port=_free_port(),
        ready_timeout=10,
        tls_context=server_context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield controller, handler, authenticator
    finally:
        controller.stop()


@pytest.fixture
def rejecting_smtp_server():
    """Plain SMTP server that rejects DATA with a 554 reply."""
    handler = RecordingHandler(reply="554 5.6.0 Message rejected by content filter")
    controller = aiosmtpd_controller.Controller(handler, hostname=LOOPBACK, port=_free_port(), ready_timeout=10)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


class WebhookServer:
    """http.server in a thread that replies to POSTs with scripted statuses and records the requests."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server hook name)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                owner.requests.append((self.path, dict(self.headers.items()), body))
                status = owner.statuses.pop(0) if owner.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):  # noqa: A002 (http.server signature)
                pass

        self.httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}/hooks/T0001/secret-token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _reports(**sections) -> Reports:
    return Reports.model_validate({"output_dir": "reports", "keep": 12, **sections})


# -- email ------------------------------------------------------------------


def test_email_starttls_auth_delivers_report(run_dir: Path, smtp_server, tls_material) -> None:
    controller, handler, authenticator = smtp_server
    cert_path, _ = tls_material
    reports = _reports(email={
        "host": LOOPBACK, "port": controller.port, "starttls": True,
        "from": "iomt-twin@hospital.example", "to": ["secops@hospital.example", "biomed@hospital.example"],
        "username_env": "TWIN_SMTP_USER", "password_env": "TWIN_SMTP_PASSWORD",
        "retries": 1, "backoff_s": BACKOFF_S, "timeout_s": 10,
    })
    client_context = ssl.create_default_context(cafile=str(cert_path))

    summary = {"findings_new": {"misplaced_devices": 1, "attack_paths": 2}, "findings_resolved": {"misplaced_devices": 0}}
    outcomes = deliver_all(run_dir, _files(run_dir), summary, reports, run_dir.parent.parent,
                           run_id=RUN_ID, env=ENV, ssl_context=client_context)

    by_channel = {o.channel: o for o in outcomes}
    assert set(by_channel) == {"folder", "email"}
    email_outcome = by_channel["email"]
    assert (email_outcome.ok, email_outcome.attempts, email_outcome.error) == (True, 1, None)
    assert email_outcome.target == f"smtp://{LOOPBACK}:{controller.port}"

    assert [(login, pw) for _, login, pw in authenticator.tries] == [
        (ENV["TWIN_SMTP_USER"].encode(), ENV["TWIN_SMTP_PASSWORD"].encode())
    ]
    assert authenticator.tries[0][0] in {"PLAIN", "LOGIN"}
    assert len(handler.envelopes) == 1
    envelope = handler.envelopes[0]
    assert envelope.mail_from == "iomt-twin@hospital.example"
    assert sorted(envelope.rcpt_tos) == ["biomed@hospital.example", "secops@hospital.example"]

    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["From"] == "iomt-twin@hospital.example"
    assert message["To"] == "secops@hospital.example, biomed@hospital.example"
    assert message["Subject"] == f"iomt-twin report for St. Example: 3 new, 0 resolved findings (run {RUN_ID})"

    # SMTP carries text lines with CRLF endings, so compare with LF endings restored.
    html_part = message.get_body(preferencelist=("html",))
    assert html_part.get_content().replace("\r\n", "\n") == (run_dir / "report.html").read_text(encoding="utf-8")
    text_part = message.get_body(preferencelist=("plain",))
    assert text_part.get_content().replace("\r\n", "\n") == (run_dir / "report.md").read_text(encoding="utf-8")

    attachments = {part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
                   for part in message.iter_attachments()}
    assert attachments == {
        "report.md": ("text/markdown", (run_dir / "report.md").read_bytes()),
        "report.json": ("application/json", (run_dir / "report.json").read_bytes()),
        "report.pdf": ("application/pdf", PDF_BYTES),
    }


def test_email_untrusted_certificate_fails(run_dir: Path, smtp_server, caplog) -> None:
    controller, handler, _ = smtp_server
    reports = _reports(email={
        "host": LOOPBACK, "port": controller.port, "from": "a@hospital.example", "to": "b@hospital.example",
        "username_env": "TWIN_SMTP_USER", "password_env": "TWIN_SMTP_PASSWORD",
        "retries": 1, "backoff_s": BACKOFF_S, "timeout_s": 10,
    })

    # The default context trusts only the system CAs, not the test certificate.
    outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent, run_id=RUN_ID, env=ENV)

    email_outcome = next(o for o in outcomes if o.channel == "email")
    assert (email_outcome.ok, email_outcome.attempts) == (False, 2)
    assert "CERTIFICATE_VERIFY_FAILED" in email_outcome.error
    assert handler.envelopes == []


def test_email_rejected_is_retried(run_dir: Path, rejecting_smtp_server, caplog) -> None:
    controller, handler = rejecting_smtp_server
    retries = 2
    reports = _reports(email={
        "host": LOOPBACK, "port": controller.port, "starttls": False,
        "from": "iomt-twin@hospital.example", "to": "secops@hospital.example",
        "retries": retries, "backoff_s": BACKOFF_S, "timeout_s": 10,
    })
    before = _snapshot(run_dir)

    with caplog.at_level(logging.INFO, logger="twin.report.deliver"):
        outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent, run_id=RUN_ID, env={})

    email_outcome = next(o for o in outcomes if o.channel == "email")
    assert (email_outcome.ok, email_outcome.attempts) == (False, retries + 1)
    assert "554" in email_outcome.error
    assert "content filter" in email_outcome.error
    assert len(handler.envelopes) == retries + 1

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    failed_attempts = [m for m in warnings if "attempt" in m and "failed" in m]
    assert len(failed_attempts) == retries + 1
    assert all(RUN_ID in m and "email" in m and "554" in m for m in failed_attempts)
    assert _snapshot(run_dir) == before


def test_email_missing_credential_variable(run_dir: Path, caplog) -> None:
    reports = _reports(email={
        "host": LOOPBACK, "port": _free_port(), "from": "a@hospital.example", "to": "b@hospital.example",
        "username_env": "TWIN_SMTP_USER", "password_env": "TWIN_SMTP_PASSWORD_UNSET",
        "retries": 0, "backoff_s": BACKOFF_S,
    })

    with caplog.at_level(logging.WARNING, logger="twin.report.deliver"):
        outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent, run_id=RUN_ID, env=ENV)

    email_outcome = next(o for o in outcomes if o.channel == "email")
    assert (email_outcome.ok, email_outcome.attempts) == (False, 0)
    assert "TWIN_SMTP_PASSWORD_UNSET" in email_outcome.error
    assert "not set" in email_outcome.error
    logged = caplog.text
    assert "TWIN_SMTP_PASSWORD_UNSET" in logged
    assert ENV["TWIN_SMTP_USER"] not in logged


def test_email_refused_connection_retried(run_dir: Path) -> None:
    port = _free_port()  # nothing listens here
    reports = _reports(email={
        "host": LOOPBACK, "port": port, "starttls": False, "from": "a@hospital.example", "to": "b@hospital.example",
        "retries": 2, "backoff_s": BACKOFF_S, "timeout_s": 5,
    })

    outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent, run_id=RUN_ID, env={})

    email_outcome = next(o for o in outcomes if o.channel == "email")
    assert (email_outcome.ok, email_outcome.attempts) == (False, 3)
    assert "ConnectionRefusedError" in email_outcome.error


# -- webhook ----------------------------------------------------------------


def test_webhook_500_then_200(run_dir: Path, caplog) -> None:
    with WebhookServer([500, 200]) as server:
        reports = _reports(webhook={
            "url": server.url, "retries": 3, "backoff_s": BACKOFF_S, "timeout_s": 5,
            "headers_env": {"Authorization": "TWIN_HOOK_TOKEN"},
        })
        with caplog.at_level(logging.INFO, logger="twin.report.deliver"):
            outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent,
                                   run_id=RUN_ID, env=ENV)

    hook = next(o for o in outcomes if o.channel == "webhook")
    assert (hook.ok, hook.attempts, hook.error) == (True, 2, "HTTP status 500")
    assert len(server.requests) == 2
    for path, headers, body in server.requests:
        assert path == "/hooks/T0001/secret-token"
        assert headers["Content-Type"] == "application/json"
        assert headers["Authorization"] == ENV["TWIN_HOOK_TOKEN"]
        assert body == (run_dir / "report.json").read_bytes()
        assert json.loads(body) == json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    # The token in the URL path and the header value never reach the log.
    assert "secret-token" not in caplog.text
    assert ENV["TWIN_HOOK_TOKEN"] not in caplog.text
    assert "secret-token" not in hook.target


def test_webhook_404_not_retried(run_dir: Path) -> None:
    before = _snapshot(run_dir)
    with WebhookServer([404, 200]) as server:
        reports = _reports(webhook={"url": server.url, "retries": 3, "backoff_s": BACKOFF_S, "timeout_s": 5})
        outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent, run_id=RUN_ID, env={})

    hook = next(o for o in outcomes if o.channel == "webhook")
    assert (hook.ok, hook.attempts, hook.error) == (False, 1, "HTTP status 404")
    assert len(server.requests) == 1
    assert _snapshot(run_dir) == before


def test_webhook_always_500_gives_up(run_dir: Path) -> None:
    with WebhookServer([500, 502, 503]) as server:
        reports = _reports(webhook={"url": server.url, "retries": 2, "backoff_s": BACKOFF_S, "timeout_s": 5})
        outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent, run_id=RUN_ID, env={})

    hook = next(o for o in outcomes if o.channel == "webhook")
    assert (hook.ok, hook.attempts, hook.error) == (False, 3, "HTTP status 503")
    assert len(server.requests) == 3


def test_webhook_missing_header_variable(run_dir: Path) -> None:
    with WebhookServer([200]) as server:
        reports = _reports(webhook={
            "url": server.url, "retries": 1, "backoff_s": BACKOFF_S, "headers_env": {"Authorization": "TWIN_NO_SUCH_VAR"},
        })
        outcomes = deliver_all(run_dir, _files(run_dir), {}, reports, run_dir.parent.parent, run_id=RUN_ID, env={})

    hook = next(o for o in outcomes if o.channel == "webhook")
    assert (hook.ok, hook.attempts) == (False, 0)
    assert "TWIN_NO_SUCH_VAR" in hook.error
    assert server.requests == []


# -- folder retention -------------------------------------------------------


def _make_runs(output_dir: Path, names: list[str]) -> None:
    for name in names:
        folder = output_dir / name
        folder.mkdir(parents=True)
        (folder / "report.json").write_text("{}", encoding="utf-8")


RUN_NAMES = [f"2024050{day}T060000Z-00000{day}" for day in range(1, 8)]


@pytest.mark.parametrize("current_index", [6, 0, 3])
def test_retention_keeps_newest_and_current(tmp_path: Path, current_index: int) -> None:
    site_dir = tmp_path / "site"
    output_dir = site_dir / "reports"
    _make_runs(output_dir, RUN_NAMES)
    (output_dir / "latest").symlink_to(RUN_NAMES[-1])
    (output_dir / "notes").mkdir()  # no report file: not a run folder
    _make_runs(output_dir, [".tmp-inflight"])
    current = output_dir / RUN_NAMES[current_index]
    keep = 3

    outcomes = deliver_all(current, {}, {}, Reports(keep=keep), site_dir, run_id=RUN_NAMES[current_index], env={})

    older_newest = [name for name in RUN_NAMES if name != current.name][-(keep - 1):]
    expected_runs = set(older_newest) | {current.name}
    remaining = {path.name for path in output_dir.iterdir()}
    assert remaining == expected_runs | {"latest", "notes", ".tmp-inflight"}
    assert outcomes == [DeliveryOutcome("folder", str(output_dir), True, 1, None, outcomes[0].at)]


def test_retention_absolute_output_dir(tmp_path: Path) -> None:
    output_dir = tmp_path / "elsewhere"
    _make_runs(output_dir, RUN_NAMES[:4])
    current = output_dir / RUN_NAMES[3]

    deliver_all(current, {}, {}, Reports(output_dir=str(output_dir), keep=1), tmp_path / "site", run_id="r", env={})

    assert {path.name for path in output_dir.iterdir()} == {RUN_NAMES[3]}


# -- workspace record -------------------------------------------------------


def test_record_deliveries_round_trip(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "workspace.twin")
    outcomes = [
        DeliveryOutcome("folder", "/srv/reports", True, 1, None, 1_714_543_200.0),
        DeliveryOutcome("email", "smtp://127.0.0.1:2525", False, 3, "SMTPDataError: 554 rejected", 1_714_543_201.5),
        DeliveryOutcome("webhook", "http://127.0.0.1:8080/hooks/...", True, 2, None, 1_714_543_202.0),
    ]

    record_deliveries(store, RUN_ID, outcomes)
    record_deliveries(store, RUN_ID, outcomes)  # recording again keeps one row per outcome

    rows = set(store.conn.execute("SELECT run_id, channel, target, ok, attempts, error, at FROM deliveries"))
    assert rows == {(RUN_ID, o.channel, o.target, int(o.ok), o.attempts, o.error, o.at) for o in outcomes}
