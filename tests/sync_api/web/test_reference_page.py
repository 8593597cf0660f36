"""The API reference page, read in a real browser: every operation listed, each link leads to its section."""

from __future__ import annotations

import json


def test_a_person_finds_an_operation_and_the_document_behind_the_page(clean, start_web, page):
    web = start_web()
    page.goto(f"{web}/api/docs")

    page.get_by_role("link", name="POST /api/bookings", exact=True).click()
    section = page.locator("section#post__api_bookings")
    assert section.is_visible()
    assert "Idempotency-Key" in section.inner_text()
    assert section.locator("text=NewBooking").count() >= 1

    page.get_by_role("link", name="OpenAPI 3.1.0 document").click()
    document = json.loads(page.locator("body").inner_text())
    assert "/api/bookings" in document["paths"]
