"""Demo data for development: students with believable Indonesian names."""

from __future__ import annotations

import random

from sqlalchemy import Engine, text

#: Demo students' idperson values start here, like the school's own numbering.
FIRST_IDPERSON = 1_000_001

_GIVEN = ["Adi", "Ayu", "Bima", "Citra", "Dewi", "Eka", "Fajar", "Gita", "Hadi", "Indah", "Joko", "Kartika",
          "Lestari", "Made", "Nur", "Putri", "Rizki", "Sari", "Tono", "Wulan", "Yusuf", "Zahra"]
_FAMILY = ["Pratama", "Saputra", "Wijaya", "Kusuma", "Lestari", "Nugroho", "Hidayat", "Santoso", "Siregar",
           "Nasution", "Wibowo", "Rahmawati", "Setiawan", "Utami", "Hasibuan"]


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


def has_students(engine: Engine) -> bool:
    with engine.connect() as connection:
        return connection.execute(text("SELECT EXISTS (SELECT 1 FROM students)")).scalar_one()
