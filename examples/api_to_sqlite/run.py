"""Poll a paginated JSON API, enrich each item with a second request, upsert into SQLite.

Run it with::

    python examples/api_to_sqlite/run.py [--db PATH] [--products N]

It starts the small catalogue API of ``catalogue_api.py`` on 127.0.0.1 (a free
port), then runs::

    HttpPoll (offset pages) > FlatMap (page -> products) > HttpRequest (details,
    8 at once) > Map (merge) > SQLSink (upsert by id)

and prints a summary. Running it again updates the same rows (``key="id"``):
the table holds each product once. Needs the ``[http]`` extra (httpx).
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

import structlog
import trio

sys.path.insert(0, str(Path(__file__).parent))  # catalogue_api.py, next to this file

from catalogue_api import serving

from nanostream_trio import Pipeline
from nanostream_trio.nodes import (
    FlatMap,
    HttpPoll,
    HttpRequest,
    HttpResponse,
    Map,
    SQLSink,
)

PAGE_SIZE = 10


def products_of(page: dict[str, Any]) -> list[dict[str, Any]]:
    """The products listed on one page of ``/products``."""
    return page["data"]


def merged(response: HttpResponse) -> dict[str, Any]:
    """The listed product with its details: one row for the table."""
    return {**response.item, **response.body}


def build(base_url: str, database: Path) -> Pipeline:
    """The pipeline: every page of the catalogue, each product's details, upserted by id."""
    pages = HttpPoll(
        f"{base_url}/products",
        offset_param="offset",
        page_size=PAGE_SIZE,
        limit_param="limit",
        items_field="data",
        polls=1,
        name="pages",
    )
    enrich = HttpRequest(f"{base_url}/products/{{id}}", concurrency=8, name="details")
    rows = SQLSink(database, "products", key="id", name="store")
    _ = pages > FlatMap(products_of, name="products") > enrich > Map(merged, name="merge") > rows
    return Pipeline(pages, name="api-to-sqlite", stats_interval=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("products.db"), help="SQLite file")
    parser.add_argument("--products", type=int, default=25, help="products the API lists")
    args = parser.parse_args(argv)
    # The library never configures logging; this script is the application.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    with serving(args.products) as base_url:
        summary = trio.run(build(base_url, args.db).run)
    with sqlite3.connect(args.db) as connection:
        (count,) = connection.execute("SELECT count(*) FROM products").fetchone()
        (value,) = connection.execute("SELECT sum(price * stock) FROM products").fetchone()
    print(
        f"{summary['pages'].items_out} pages, {summary['details'].items_out} products "
        f"enriched; {args.db} holds {count} products, stock worth {value:.2f}",
        flush=True,
    )
    return 0 if summary.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
