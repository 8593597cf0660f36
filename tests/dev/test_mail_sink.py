"""The development mail sink as ``make run`` starts it: a real process on free ports, fed over SMTP."""

from __future__ import annotations

import html
import io
import signal
import smtplib
import sys
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.support import ROOT, Service, base_env, free_ports


class Sink:
    """A running ``dev/mail_sink.py``: where to send mail and where to read it."""

    def __init__(self, service: Service, smtp_port: int, web: str, folder: Path):
        self.service, self.smtp_port, self.web, self.folder = service, smtp_port, web, folder

    def send(self, message: EmailMessage) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.send_message(message)

    def messages(self) -> list[dict]:
        response = requests.get(f"{self.web}/api/messages", timeout=5)
        response.raise_for_status()
        return response.json()["items"]


@pytest.fixture
def start_sink(services, tmp_path):
    """Start ``dev/mail_sink.py`` on free ports, keeping messages in ``folder``."""

    def start(folder: Path) -> Sink:
        smtp_port, web_port = free_ports(2)
        argv = [sys.executable, str(ROOT / "dev" / "mail_sink.py"), "--smtp-port", str(smtp_port),
                "--web-port", str(web_port), "--dir", str(folder)]
        web = f"http://127.0.0.1:{web_port}"
        service = Service(f"mail-sink-{web_port}", argv, base_env(), tmp_path, ready_url=f"{web}/api/messages")
        services.append(service.start())
        return Sink(service, smtp_port, web, folder)

    return start


@pytest.fixture
def sink(start_sink, tmp_path) -> Sink:
    return start_sink(tmp_path / "mail-sink")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "teal").save(buffer, "PNG")
    return buffer.getvalue()


def e_ticket(subject: str, image: bytes) -> tuple[EmailMessage, str]:
    """A text part, and an HTML part showing ``image`` inline by Content-ID, as the mailer sends them."""
    message = EmailMessage()
    message["From"] = "antrian <noreply@example.com>"
    message["To"] = "Dewi Lestari <dewi@example.com>"
    message["Subject"] = subject
    message.set_content("Booking code: 4KDK-H6WP\n")
    cid = make_msgid(domain="antrian.test")
    message.add_alternative(f'<p>Show this QR code</p><img src="cid:{cid[1:-1]}" alt="QR">', subtype="html")
    message.get_payload()[1].add_related(image, "image", "png", cid=cid)
    return message, cid[1:-1]


def test_a_message_with_an_inline_image_is_kept_listed_and_shown(sink):
    # Given a running sink and an e-ticket with an inline PNG
    image = png()
    message, cid = e_ticket("Your e-ticket 4KDK-H6WP — Bromo Sunrise", image)

    # When it is sent over SMTP
    sink.send(message)

    # Then the JSON list has it, with its headers decoded
    [item] = sink.messages()
    assert item["subject"] == "Your e-ticket 4KDK-H6WP — Bromo Sunrise"
    assert item["from"] == "antrian <noreply@example.com>" and item["to"] == "Dewi Lestari <dewi@example.com>"
    assert item["time"].endswith("+00:00")

    # And it is kept as an .eml file, served as it is at the raw link
    kept = sink.folder / f"{item['name']}.eml"
    assert kept.is_file() and b"4KDK-H6WP" in kept.read_bytes()
    raw = requests.get(f"{sink.web}/messages/{item['name']}/raw", timeout=5)
    assert raw.status_code == 200 and raw.content == kept.read_bytes()

    # And its page shows the HTML part in a sandboxed iframe, its cid: reference rewritten, and the text part
    page = requests.get(f"{sink.web}/messages/{item['name']}", timeout=5)
    assert page.status_code == 200
    part_url = f"/messages/{item['name']}/parts/{cid}"
    assert "<iframe sandbox srcdoc=" in page.text
    srcdoc = html.unescape(page.text.split('srcdoc="', 1)[1].split('"', 1)[0])
    assert f'<img src="{part_url}" alt="QR">' in srcdoc and "cid:" not in srcdoc
    assert "Booking code: 4KDK-H6WP" in page.text
    assert f'href="/messages/{item["name"]}/raw"' in page.text

    # And the inline part is served with its own content type
    part = requests.get(f"{sink.web}{part_url}", timeout=5)
    assert part.status_code == 200
    assert part.headers["Content-Type"] == "image/png" and part.content == image


def test_the_list_is_newest_first_and_the_page_lists_every_message(sink):
    # Given two messages sent one after the other
    for subject in ("Invoice 4KDK-H6WP", "Your e-ticket 4KDK-H6WP"):
        sink.send(e_ticket(subject, png())[0])

    # Then the newest comes first, in the JSON and on the page, which refreshes itself
    assert [item["subject"] for item in sink.messages()] == ["Your e-ticket 4KDK-H6WP", "Invoice 4KDK-H6WP"]
    page = requests.get(sink.web, timeout=5).text
    assert page.index("Your e-ticket 4KDK-H6WP") < page.index("Invoice 4KDK-H6WP")
    assert '<meta http-equiv="refresh"' in page


@pytest.mark.parametrize("path", ["/messages/nope", "/messages/..%2F..%2Fpytest.ini/raw", "/messages/{name}/parts/x@y"])
def test_what_is_not_there_is_a_404(sink, path):
    sink.send(e_ticket("Invoice", png())[0])
    name = sink.messages()[0]["name"]

    assert requests.get(sink.web + path.format(name=name), timeout=5).status_code == 404


def test_sigterm_stops_it_cleanly_and_the_messages_stay(sink, start_sink):
    # Given a kept message
    sink.send(e_ticket("Invoice 4KDK-H6WP", png())[0])

    # When the sink gets SIGTERM
    sink.service.process.send_signal(signal.SIGTERM)

    # Then it exits 0, saying so
    assert sink.service.process.wait(10) == 0
    assert sink.service.log().rstrip().endswith("stopped")

    # And a new sink on the same folder lists the message again
    again = start_sink(sink.folder)
    assert [item["subject"] for item in again.messages()] == ["Invoice 4KDK-H6WP"]
