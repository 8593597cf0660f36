"""Demo data for development: students with believable Indonesian names, and tours to book."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal

from sqlalchemy import Engine, exists, insert, select, text

from antrian.db.models import Tour

#: Demo students' idperson values start here, like the school's own numbering.
FIRST_IDPERSON = 1_000_001

_GIVEN = ["Adi", "Ayu", "Bima", "Citra", "Dewi", "Eka", "Fajar", "Gita", "Hadi", "Indah", "Joko", "Kartika",
          "Lestari", "Made", "Nur", "Putri", "Rizki", "Sari", "Tono", "Wulan", "Yusuf", "Zahra"]
_FAMILY = ["Pratama", "Saputra", "Wijaya", "Kusuma", "Lestari", "Nugroho", "Hidayat", "Santoso", "Siregar",
           "Nasution", "Wibowo", "Rahmawati", "Setiawan", "Utami", "Hasibuan"]


#: Demo tours and their price per seat in IDR.
_TOURS = [
    ("Bromo Sunrise", 1_500_000), ("Raja Ampat Snorkeling", 8_750_000), ("Borobudur & Prambanan", 1_250_000),
    ("Komodo Island Hopping", 4_900_000), ("Kawah Ijen Blue Fire", 1_350_000), ("Danau Toba & Samosir", 2_400_000),
    ("Tana Toraja Heritage", 3_600_000), ("Nusa Penida Day Trip", 950_000), ("Dieng Plateau Sunrise", 1_100_000),
    ("Gili Islands Snorkeling", 1_750_000), ("Ubud Rice Terraces & Temples", 850_000),
    ("Labuan Bajo Liveaboard", 6_500_000),
]
#: Tours leave early in the morning, western Indonesian time (UTC+7).
_WIB = timezone(timedelta(hours=7), "WIB")


def seed_students(engine: Engine, count: int, *, seed: int = 7) -> int:
    """Insert ``count`` demo students (skipping idpersons already there); return how many were new."""
    rng = random.Random(seed)
    rows = [
        {"idperson": FIRST_IDPERSON + n, "name": f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}"} for n in range(count)
    ]
    with engine.begin() as connection:
        result = connection.execute(
            text(
                """INSERT INTO students (idperson, name)
                   SELECT * FROM unnest(CAST(:idpersons AS bigint[]), CAST(:names AS text[]))
                   ON CONFLICT (idperson) DO NOTHING"""
            ),
            {"idpersons": [r["idperson"] for r in rows], "names": [r["name"] for r in rows]},
        )
    return result.rowcount


def seed_tours(engine: Engine, count: int, *, seed: int = 7, now: datetime | None = None) -> int:
    """Insert ``count`` demo tours with 20–40 seats, leaving 2–12 weeks after ``now``; return how many."""
    if count == 0:
        return 0
    rng = random.Random(seed)
    today = (now or datetime.now(UTC)).astimezone(_WIB).date()
    rows = []
    for n in range(count):
        name, price = _TOURS[n % len(_TOURS)]  # past the list, the same tours again on other dates
        starts_on = today + timedelta(days=rng.randint(14, 84))
        rows.append({"name": name, "quota": rng.randint(20, 40), "price": Decimal(price),
                     "starts_at": datetime.combine(starts_on, time(rng.choice([4, 6, 7, 8])), _WIB)})
    with engine.begin() as connection:
        connection.execute(insert(Tour).values(rows))  # one INSERT: every row goes in, or none does
    return len(rows)


def has_students(engine: Engine) -> bool:
    with engine.connect() as connection:
        found: bool = connection.execute(text("SELECT EXISTS (SELECT 1 FROM students)")).scalar_one()
        return found


def has_tours(engine: Engine) -> bool:
    with engine.connect() as connection:
        return connection.execute(select(exists().select_from(Tour))).scalar_one()
