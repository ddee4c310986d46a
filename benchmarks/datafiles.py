"""Generated input files for the real-workload benchmarks (reproducible: fixed seeds).

* :func:`text_log`: plain text log lines (about 80 bytes each), for the
  line-reading rows (``TailFile``, ``LocalFileReader(serialize=True)``).
* :func:`json_log`: structured JSON logs shaped like structlog's
  ``JSONRenderer(sort_keys=True)`` output (the shape of
  ``examples/log_ingestion/sample.jsonl``), with malformed lines mixed in
  (records cut short as a crash mid-write leaves them, stray text such as a
  traceback line, and a few records without a ``timestamp``), and timestamps
  that mostly move forward but sometimes step back by up to a minute.
* :func:`orders_csv`: a CSV of realistic order rows (about 89 bytes a row, so
  500,000 rows make about 44 MiB), some fields quoted, some non-ASCII.

Each function returns what the file holds that a check needs (line counts).
"""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path
from typing import Any

START = datetime.datetime(2024, 5, 17, 9, 0, 0, tzinfo=datetime.UTC)

EVENTS = {
    "info": ["request_handled", "cache_hit", "user_login", "job_finished"],
    "warning": ["slow_request", "retrying_upstream", "cache_miss_storm"],
    "error": ["upstream_failed", "db_timeout"],
}
PATHS = ["/", "/cart", "/checkout", "/api/items", "/api/items/42", "/login"]
#: One line in this many is a record cut short; one in ``STRAY_EVERY`` is stray text.
BROKEN_EVERY = 997
STRAY_EVERY = 4999
#: One warning-or-worse record in this many has no timestamp.
UNSTAMPED_EVERY = 1499


def text_log(path: Path, n: int, seed: int = 1) -> int:
    """Write ``n`` plain text log lines to ``path``; return ``n``."""
    rng = random.Random(seed)
    levels = ["INFO"] * 16 + ["WARN"] * 3 + ["ERROR"]
    moment = START
    step = datetime.timedelta(milliseconds=37)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        write = handle.write
        for number in range(n):
            moment += step
            level = rng.choice(levels)
            write(
                f"{moment:%Y-%m-%dT%H:%M:%S}.{number % 1000:03d}Z {level:<5} shop "
                f"{rng.choice(PATHS):<14} status=200 duration_ms={rng.random() * 90:.1f}\n"
            )
    return n


def json_log(path: Path, n: int, seed: int = 2) -> dict[str, int]:
    """Write ``n`` lines of structured JSON logs (some malformed) to ``path``.

    Returns:
        ``{"lines": n, "malformed": ..., "unstamped": ...}``.
    """
    rng = random.Random(seed)
    levels = rng.choices(["info", "warning", "error"], weights=[80, 15, 5], k=n)
    seconds = 0.0
    malformed = unstamped = kept = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        write = handle.write
        for number, level in enumerate(levels):
            seconds += rng.uniform(0.01, 0.2)
            stamp = seconds - rng.uniform(0, 60) if number % 97 == 0 else seconds
            record: dict[str, Any] = {
                "duration_ms": round(rng.lognormvariate(3, 0.8), 1),
                "event": rng.choice(EVENTS[level]),
                "level": level,
                "path": rng.choice(PATHS),
                "service": "shop",
                "timestamp": (START + datetime.timedelta(seconds=stamp)).isoformat(
                    timespec="milliseconds"
                ),
            }
            if level != "info":
                kept += 1
                if kept % UNSTAMPED_EVERY == 0:
                    del record["timestamp"]
                    unstamped += 1
            text = json.dumps(record, sort_keys=True)
            if number % BROKEN_EVERY == BROKEN_EVERY - 1:
                text = text[:40]
                malformed += 1
            elif number % STRAY_EVERY == STRAY_EVERY - 1:
                text = "Traceback (most recent call last):"
                malformed += 1
            write(text + "\n")
    return {"lines": n, "malformed": malformed, "unstamped": unstamped}


FIRST = ["anna", "lukas", "zoë", "mateo", "sofia", "noah", "élodie", "jan", "mia", "omar"]
LAST = ["mueller", "garcia", "smith", "rossi", "nowak", "dubois", "jensen", "kim"]
PRODUCTS = [
    "Widget Pro 3",
    '"Cable, USB-C 2m"',
    "Desk Lamp",
    '"Mug ""Classic"" 350ml"',
    "Notebook A5",
    "Headphones X2",
    '"Chair, ergonomic"',
    "Café Beans 1kg",
]
COUNTRIES = ["DE", "FR", "ES", "IT", "PL", "US", "GB", "SE", "NL"]
STATUSES = ["shipped"] * 6 + ["pending"] * 2 + ["cancelled", "returned"]


def orders_csv(path: Path, n: int, seed: int = 3) -> int:
    """Write a header and ``n`` order rows to ``path``; return ``n``."""
    rng = random.Random(seed)
    moment = START
    with open(path, "w", encoding="utf-8", newline="") as handle:
        write = handle.write
        write("order_id,created_at,email,country,product,quantity,unit_price,status\r\n")
        for number in range(n):
            moment += datetime.timedelta(seconds=rng.randint(1, 30))
            email = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randint(1, 999)}@example.com"
            write(
                f"{1_000_000 + number},{moment:%Y-%m-%dT%H:%M:%SZ},{email},"
                f"{rng.choice(COUNTRIES)},{rng.choice(PRODUCTS)},{rng.randint(1, 9)},"
                f"{rng.randint(199, 99_999) / 100:.2f},{rng.choice(STATUSES)}\r\n"
            )
    return n
