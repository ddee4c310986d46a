"""``nanostream demo api``: a paginated JSON API polled, enriched and upserted into SQLite.

The demo serves a small product catalogue itself (stdlib ``http.server`` in a
thread, on 127.0.0.1 and a free port; :func:`serving_catalogue`) and runs::

    HttpPoll (offset pages) > FlatMap (page -> products)
        > HttpRequest (each product's details, 8 at once) > Map (merge, print) > SQLSink

into a temporary SQLite file. ``examples/api_to_sqlite`` is the same
pipeline as a script to read and adapt. It needs httpx (the ``[http]`` extra):
:func:`missing_httpx` says so before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._pipeline import Pipeline

__all__ = ["PAGE_SIZE", "build_api_demo", "missing_httpx", "serving_catalogue"]

#: Products per page of the demo's ``/products`` listing.
PAGE_SIZE = 10
_NAMES = ("anvil", "bucket", "chisel", "drill", "easel", "file", "gimlet", "hammer", "level")
_DETAILS = re.compile(r"^/products/(\d+)$")


def missing_httpx() -> str | None:
    """What to tell the user when httpx cannot be imported (None: it can)."""
    try:
        import httpx  # noqa: F401
    except ImportError as exc:
        return (
            f"nanostream demo api needs httpx, which cannot be imported ({exc}); "
            "install the extra: pip install 'nanostream-trio[http]'"
        )
    return None


class _CatalogueServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the request threads
    products: int = 0


class _CatalogueHandler(BaseHTTPRequestHandler):
    server: _CatalogueServer

    def do_GET(self) -> None:
        target = urlsplit(self.path)
        count = self.server.products
        if target.path == "/products":
            query = parse_qs(target.query)
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", [str(PAGE_SIZE)])[0])
            ids = range(offset + 1, min(offset + limit, count) + 1)
            page = [{"id": i, "name": f"{_NAMES[i % len(_NAMES)]}-{i}"} for i in ids]
            self._reply(200, {"data": page, "total": count})
        elif (match := _DETAILS.match(target.path)) and 1 <= int(match.group(1)) <= count:
            product = int(match.group(1))
            self._reply(200, {"id": product, "price": round(1.5 * product + 0.99, 2)})
        else:
            self._reply(404, {"error": f"nothing at {target.path}"})

    def _reply(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo prints rows, not an access log


@contextlib.contextmanager
def serving_catalogue(products: int) -> Iterator[str]:
    """Serve ``products`` products on 127.0.0.1; yields the base URL. Threads joined at exit."""
    server = _CatalogueServer(("127.0.0.1", 0), _CatalogueHandler)
    server.products = products
    thread = threading.Thread(target=server.serve_forever, name="nanostream-demo-api")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def build_api_demo(base_url: str, database: Path, show: Callable[[Any], None]) -> Pipeline:
    """The demo's pipeline; ``show`` is called with each row before it is written."""
    from .nodes import FlatMap, HttpPoll, HttpRequest, Map, SQLSink

    def products(page: dict[str, Any]) -> list[dict[str, Any]]:
        return list(page["data"])

    def merge(response: Any) -> dict[str, Any]:
        row = {**response.item, **response.body}
        show(row)
        return row

    pages = HttpPoll(
        f"{base_url}/products",
        offset_param="offset",
        page_size=PAGE_SIZE,
        limit_param="limit",
        items_field="data",
        polls=1,
        name="HttpPoll",
    )
    details = HttpRequest(f"{base_url}/products/{{id}}", concurrency=8, name="HttpRequest")
    sink = SQLSink(database, "products", key="id", name="SQLSink")
    _ = pages > FlatMap(products, name="FlatMap") > details > Map(merge, name="Map") > sink
    return Pipeline(pages, name="demo-api", stats_interval=None)
