"""The admin bookings page in a real headless Chromium, against a real sync-api, mailer and SMTP server: a booking
found by its code, its invoice resent from the page and sent once; a customer's name shown as text."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.mailer.test_resend import resends
from tests.support import API_TOKEN, outbox_drained, settled, wait_until
from tests.sync_api.bookings.helpers import book, create_tour

#: Milliseconds for what a worker does to show on the page (the outbox relay, the mailer, the page's reload).
WORKER_MS = 20_000
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def web(clean, start_web):
    return start_web(BOOKING_EXPIRY_MINUTES="30")


def sign_in(page: Page, web: str) -> None:
    """Open the bookings page without a session, get sent to the login form, sign in and land on the page."""
    page.goto(f"{web}/admin/bookings")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=(/|%2F)admin(/|%2F)bookings$"))
    page.fill("#token", API_TOKEN)
    page.click("#login")
    expect(page).to_have_url(f"{web}/admin/bookings")
    expect(page.get_by_role("heading", name="Bookings", exact=True)).to_be_visible()


def find(page: Page, code: str) -> None:
    page.fill("#code", code)
    page.click("#search")


def test_support_finds_a_booking_by_its_code_and_resends_its_invoice_once_from_the_page(
    web, auth, smtp_server, start_mailer, clean, page: Page
):
    # Given a booking whose invoice the mailer sent
    start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=2).json()
    code = booking["code"]
    wait_until(lambda: len(smtp_server.messages) == 1, timeout=20, what="the invoice")

    # When support signs in and searches its code, as the customer reads it out
    sign_in(page, web)
    expect(page.get_by_role("link", name="Jobs")).to_have_attribute("href", "/admin/jobs")
    find(page, code.lower())

    # Then the page shows the booking and its invoice, sent, with its Message-ID
    expect(page.locator("#booking-code")).to_have_text(code)
    expect(page.locator('#booking-fields [data-field="status"]')).to_have_text("pending")
    expect(page.locator('#booking-fields [data-field="customer"]')).to_have_text("Budi Santoso <budi@example.com>")
    invoice = page.locator('#email-rows tr[data-kind="invoice"]:not([data-resend])')
    expect(invoice.locator('[data-field="status"]')).to_have_text("sent", timeout=WORKER_MS)
    expect(invoice.locator('[data-field="message_id"]')).to_have_text(f"<invoice.{code}@tripin.example>")
    expect(invoice.locator('[data-field="resends"]')).to_have_text("0")

    # When support presses Resend and accepts the confirmation
    dialogs: list[str] = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    invoice.get_by_role("button", name="Resend").click()

    # Then the page says it was queued, lists the resend, and shows it sent once the mailer sent it
    [row] = wait_until(lambda: resends(clean), timeout=10, what="the resend recorded")
    assert len(dialogs) == 1 and code in dialogs[0]
    expect(page.locator("#message")).to_have_text(f"Resend #{row['id']} of the invoice email of {code} queued.")
    expect(invoice.locator('[data-field="resends"]')).to_have_text("1")
    again = page.locator(f'#email-rows tr[data-resend="{row["id"]}"]')
    expect(again.locator('[data-field="kind"]')).to_have_text(f"invoice (resend #{row['id']} by admin)")
    expect(again.locator('[data-field="status"]')).to_have_text("sent", timeout=WORKER_MS)
    resent_id = f"<invoice.{code}.resend-{row['id']}@tripin.example>"
    expect(again.locator('[data-field="message_id"]')).to_have_text(resent_id)
    # And the SMTP server got exactly one more email, recorded as the admin's
    outbox_drained(clean)
    settled()
    assert len(smtp_server.messages) == 2 and smtp_server.messages[1]["Message-ID"] == resent_id
    assert [(r["kind"], r["status"], r["source"]) for r in resends(clean)] == [("invoice", "sent", "admin")]

    # When support searches a code nobody has, the page says so
    find(page, "XXXX-XXXX")
    expect(page.locator("#none")).to_have_text("No booking has the code XXXX-XXXX.")
    expect(page.locator("#booking")).to_be_hidden()


def test_a_customer_name_carrying_html_is_shown_as_text(web, auth, page: Page):
    # Given a booking whose customer typed markup as their name
    tour = create_tour(web, auth, quota=10)
    code = book(web, auth, tour["id"], quantity=1, customer_name=HOSTILE).json()["code"]
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    # When support opens it on the page
    sign_in(page, web)
    find(page, code)

    # Then the name shows as text, and no element was made of it
    expect(page.locator('#booking-fields [data-field="customer"]')).to_have_text(f"{HOSTILE} <budi@example.com>")
    assert page.locator("img").count() == 0
    assert dialogs == []
