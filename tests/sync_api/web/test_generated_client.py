"""An integrator generates a Python client from the running sync-api's /api/openapi.json and books with it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from datetime import UTC, datetime

from tests.support import API_TOKEN, BIN


def test_a_client_generated_from_the_document_books_and_reads_errors(clean, start_web, tmp_path, monkeypatch):
    web = start_web()
    generated = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--url", f"{web}/api/openapi.json",
         "--output-path", str(tmp_path / "antrian_client"), "--meta", "none"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert generated.returncode == 0 and "Warning" not in generated.stdout, generated.stdout + generated.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    client_package = importlib.import_module("antrian_client")
    post_tours = importlib.import_module("antrian_client.api.bookings.post_api_tours")
    post_bookings = importlib.import_module("antrian_client.api.bookings.post_api_bookings")
    get_booking = importlib.import_module("antrian_client.api.bookings.get_api_bookings_booking_id")
    models = importlib.import_module("antrian_client.models")
    with client_package.AuthenticatedClient(base_url=web, token=API_TOKEN) as client:
        book_with(client, post_tours, post_bookings, get_booking, models)
    for name in [name for name in sys.modules if name.split(".")[0] == "antrian_client"]:
        del sys.modules[name]


def book_with(client, post_tours, post_bookings, get_booking, models) -> None:
    tour = post_tours.sync(client=client, body=models.NewTour(
        name="Ijen", quota=2, price="450000", starts_at=datetime(2031, 3, 1, 1, 0, tzinfo=UTC)))
    assert isinstance(tour, models.Tour) and tour.quota == 2

    booked = post_bookings.sync(client=client, idempotency_key="order-77", body=models.NewBooking(
        tour_id=tour.id, quantity=2, customer_name="Dewi", customer_email="dewi@example.com"))
    assert isinstance(booked, models.BookingCreated) and booked.total_amount == "900000.00"
    again = post_bookings.sync_detailed(client=client, idempotency_key="order-77", body=models.NewBooking(
        tour_id=tour.id, quantity=2, customer_name="Dewi", customer_email="dewi@example.com"))
    assert again.status_code == 201 and again.parsed.id == booked.id
    assert again.headers["Idempotent-Replayed"] == "true"

    sold_out = post_bookings.sync(client=client, body=models.NewBooking(
        tour_id=tour.id, quantity=1, customer_name="Eko", customer_email="eko@example.com"))
    assert isinstance(sold_out, models.ErrorBody) and "seats" in sold_out.error

    booking = get_booking.sync(client=client, booking_id=booked.id)
    assert isinstance(booking, models.Booking) and booking.status == "pending" and booking.paid_at is None
