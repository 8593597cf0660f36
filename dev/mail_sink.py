"""The development mail sink: an SMTP server that keeps every message it receives, and a web page to read them.

Like MailHog or Mailpit, only tiny, for ``make run`` and the tests: nothing leaves this machine. An aiosmtpd
``Controller`` accepts mail for any address and writes each message as received to an ``.eml`` file in a folder
(default ``var/mail-sink/``), so the messages outlive the process and open in any mail program. A Flask app,
served by werkzeug in a thread, shows them:

  /                                  the messages, newest first; refreshes itself
  /messages/<name>                   one message: its HTML part in a sandboxed iframe, its text part
  /messages/<name>/parts/<cid>       an inline part by Content-ID (the HTML's ``cid:`` references point here)
  /messages/<name>/raw               the ``.eml`` file
  /api/messages                      the list as JSON: ``{"items": [{"name", "time", "from", "to", "subject"}],
                                     "total"}``, newest first, for tests and scripts to poll

    python dev/mail_sink.py --smtp-port 1025 --web-port 8025 --dir var/mail-sink

SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import logging
import re
import secrets
import signal
import threading
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from urllib.parse import unquote

import click
from aiosmtpd.controller import Controller
from flask import Flask, Response, abort, render_template_string, send_file, url_for
from werkzeug.security import safe_join
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
#: Where messages are kept unless ``--dir`` says otherwise (``var/`` is git-ignored).
DEFAULT_DIR = ROOT / "var" / "mail-sink"
#: Seconds between two refreshes of the list page.
REFRESH_S = 3
#: A ``cid:`` reference in an HTML part (RFC 2392), up to the end of the attribute or ``url()``.
_CID = re.compile(r"""cid:([^"'\s)>]+)""", re.IGNORECASE)
#: The message page and its iframe load nothing from elsewhere and run no script.
_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"

_STYLE = """<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
  table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .3rem .6rem; }
  tr:nth-child(even) { background: #f4f4f4; } .muted { color: #777; } .time { white-space: nowrap; }
  iframe { width: 100%; height: 65vh; border: 1px solid #ccc; } pre { white-space: pre-wrap; background: #f4f4f4; }
</style>"""

_LIST = """<!doctype html><html><head><meta charset="utf-8"><title>mail sink ({{ items|length }})</title>
<meta http-equiv="refresh" content="{{ refresh }}">""" + _STYLE + """</head><body>
<h1>mail sink</h1>
<p class="muted">{{ items|length }} message(s) in {{ folder }}; this page refreshes every {{ refresh }} s.</p>
{% if items %}<table><tr><th>time (UTC)</th><th>from</th><th>to</th><th>subject</th></tr>
{% for item in items %}<tr><td class="time">{{ item.time[:19]|replace("T", " ") }}</td><td>{{ item["from"] }}</td>
<td>{{ item.to }}</td>
<td><a href="{{ url_for('message', name=item.name) }}">{{ item.subject or "(no subject)" }}</a></td></tr>
{% endfor %}</table>
{% else %}<p>No messages yet.</p>{% endif %}
</body></html>"""

_MESSAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{{ item.subject }}</title>""" + _STYLE + """
</head><body><p><a href="{{ url_for('index') }}">&larr; all messages</a>
 · <a href="{{ url_for('raw', name=item.name) }}">raw .eml</a></p>
<h1>{{ item.subject or "(no subject)" }}</h1>
<table>{% for label, value in headers %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
{% if attachments %}<p>Attachments: {% for filename, content_type in attachments %}{{ filename }} ({{ content_type }})
{%- if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
{% if html is not none %}<h2>HTML</h2><iframe sandbox srcdoc="{{ html }}"></iframe>{% endif %}
{% if text is not none %}<h2>Text</h2><pre>{{ text }}</pre>{% endif %}
</body></html>"""


class Keeper:
    """The aiosmtpd handler: writes each message, as received, to ``<folder>/<time>-<random>.eml``.

    Parameters:
      folder(Path): where the messages go; it exists.
    """

    def __init__(self, *, folder: Path):
        self.folder = folder

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        name = f"{datetime.now(UTC):%Y%m%d-%H%M%S-%f}-{secrets.token_hex(3)}"
        partial = self.folder / f".{name}.partial"  # the web page never sees half a message
        partial.write_bytes(envelope.original_content)
        partial.replace(self.folder / f"{name}.eml")
        headers = _summary(self.folder / f"{name}.eml")
        click.echo(f"kept {headers['subject']!r} from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}"
                   f" as {name}.eml")
        return "250 Message accepted for delivery"


def _summary(path: Path) -> dict[str, str]:
    with path.open("rb") as file:
        headers = BytesHeaderParser(policy=policy.default).parse(file)
    return {
        "name": path.stem,
        "time": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(),
        "from": str(headers.get("From", "")),
        "to": str(headers.get("To", "")),
        "subject": str(headers.get("Subject", "")),
    }


def _messages(folder: Path) -> list[dict[str, str]]:
    """Every kept message's summary, newest first."""
    items = []
    for path in folder.glob("*.eml"):
        try:
            items.append(_summary(path))
        except FileNotFoundError:  # deleted meanwhile
            continue
    return sorted(items, key=lambda item: (item["time"], item["name"]), reverse=True)


def create_app(*, folder: Path) -> Flask:
    """The web UI and JSON API over the ``.eml`` files in ``folder``."""
    app = Flask(__name__)

    def path_of(name: str) -> Path:
        found = safe_join(str(folder), f"{name}.eml")
        if found is None or not Path(found).is_file():
            abort(404)
        return Path(found)

    def parsed(name: str) -> EmailMessage:
        with path_of(name).open("rb") as file:
            return BytesParser(policy=policy.default).parse(file)

    @app.get("/")
    def index():
        return render_template_string(_LIST, items=_messages(folder), folder=folder, refresh=REFRESH_S)

    @app.get("/api/messages")
    def api_messages():
        items = _messages(folder)
        return {"items": items, "total": len(items)}

    @app.get("/messages/<name>")
    def message(name: str):
        email = parsed(name)
        html_part = email.get_body(preferencelist=("html",))
        text_part = email.get_body(preferencelist=("plain",))
        html = None
        if html_part is not None:
            html = _CID.sub(
                lambda match: url_for("part", name=name, content_id=unquote(match.group(1))), html_part.get_content()
            )
        headers = [(label, str(email[label])) for label in ("From", "To", "Cc", "Reply-To", "Date", "Message-ID")
                   if email[label] is not None]
        attachments = [(part.get_filename() or "(unnamed)", part.get_content_type())
                       for part in email.iter_attachments()]
        page = render_template_string(
            _MESSAGE, item=_summary(path_of(name)), headers=headers, attachments=attachments, html=html,
            text=text_part.get_content() if text_part is not None else None,
        )
        return Response(page, headers={"Content-Security-Policy": _CSP})

    @app.get("/messages/<name>/parts/<path:content_id>")
    def part(name: str, content_id: str):
        for item in parsed(name).walk():
            if str(item.get("Content-ID", "")).strip().strip("<>") == content_id:
                charset = item.get_content_charset()
                content_type = item.get_content_type() + (f"; charset={charset}" if charset else "")
                return Response(item.get_payload(decode=True), content_type=content_type)
        abort(404)

    @app.get("/messages/<name>/raw")
    def raw(name: str):
        return send_file(path_of(name), mimetype="message/rfc822", as_attachment=True,
                         download_name=f"{name}.eml")

    return app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Where SMTP and the web page listen.")
@click.option("--smtp-port", type=click.IntRange(1, 65535), default=1025, show_default=True)
@click.option("--web-port", type=click.IntRange(1, 65535), default=8025, show_default=True)
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR,
              show_default="var/mail-sink",
              help="Where each message is kept as an .eml file.")
def main(host: str, smtp_port: int, web_port: int, folder: Path) -> None:
    """Keep every message sent to SMTP HOST:SMTP_PORT and show them on http://HOST:WEB_PORT/."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per page refresh
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    smtp = Controller(Keeper(folder=folder), hostname=host, port=smtp_port, enable_SMTPUTF8=True)
    try:
        smtp.start()
    except OSError as exc:
        raise click.ClickException(f"mail sink: cannot listen for SMTP on {host}:{smtp_port}: {exc}") from None
    try:
        web = make_server(host, web_port, create_app(folder=folder), threaded=True)
    except OSError as exc:
        smtp.stop()
        raise click.ClickException(f"mail sink: cannot serve the web page on {host}:{web_port}: {exc}") from None
    threading.Thread(target=web.serve_forever, name="web", daemon=True).start()
    click.echo(f"SMTP on {host}:{smtp_port}, messages kept in {folder}, shown on http://{host}:{web_port}/")
    stop.wait()
    web.shutdown()
    smtp.stop()
    click.echo("stopped")


if __name__ == "__main__":
    main()
