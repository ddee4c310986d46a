"""Write ``sample.jsonl``: a small, reproducible file of structured JSON logs made with structlog.

Run it with ``python examples/log_ingestion/generate_sample.py`` to recreate
the bundled sample. The records look like those of a small web service over
five minutes: mostly ``info``, some ``warning`` and ``error``, with
timestamps that always move forward. One line is cut short on purpose (as a
crash in the middle of a write leaves it), so the example shows how a bad line
is reported and the rest still flow.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

SAMPLE = Path(__file__).with_name("sample.jsonl")
START = datetime.datetime(2024, 5, 17, 9, 0, 0, tzinfo=datetime.UTC)
RECORDS = 240
BROKEN_AT = 100  # the record written only in part

EVENTS = {
    "info": ["request_handled", "cache_hit", "user_login", "job_finished"],
    "warning": ["slow_request", "retrying_upstream", "cache_miss_storm"],
    "error": ["upstream_failed", "db_timeout"],
}


class FixedClock:
    """A structlog processor stamping records with a made-up, advancing time."""

    def __init__(self, rng: random.Random) -> None:
        self.now = START
        self.rng = rng

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        self.now += datetime.timedelta(seconds=self.rng.uniform(0.2, 2.3))
        event["timestamp"] = self.now.isoformat(timespec="milliseconds")
        return event


def generate(path: Path = SAMPLE, seed: int = 7) -> None:
    """Write the sample to ``path``; the same seed gives the same file."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        # wrap_logger, not structlog.configure: the script leaves global state alone.
        log = structlog.wrap_logger(
            structlog.WriteLogger(handle),
            processors=[
                structlog.processors.add_log_level,
                FixedClock(rng),
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
        )
        for number in range(RECORDS):
            level = rng.choices(["info", "warning", "error"], weights=[80, 15, 5])[0]
            fields = {
                "service": "shop",
                "path": rng.choice(["/", "/cart", "/checkout", "/api/items"]),
                "duration_ms": round(rng.lognormvariate(3, 0.8), 1),
            }
            if number == BROKEN_AT:
                handle.flush()
                position = handle.tell()
                getattr(log, level)(rng.choice(EVENTS[level]), **fields)
                handle.flush()
                handle.seek(position + 40)  # keep the first 40 characters of the record
                handle.truncate()
                handle.write("\n")
                continue
            getattr(log, level)(rng.choice(EVENTS[level]), **fields)


if __name__ == "__main__":
    generate()
    print(f"wrote {SAMPLE}")
