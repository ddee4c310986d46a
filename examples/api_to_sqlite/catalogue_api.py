"""A small product catalogue API for the example: stdlib ``http.server`` in a thread.

Two endpoints, JSON only:

* ``GET /products?offset=N&limit=M``: a page ``{"data": [{"id", "name"}, ...],
  "total": T}`` of the catalogue, ``limit`` products from ``offset`` (an
  offset-paginated list, as many real APIs have);
* ``GET /products/<id>``: one product's details ``{"id", "price", "stock"}``.

:func:`serving` starts it on 127.0.0.1 on a free port and stops it (the
server thread and every request thread joined) when the ``with`` ends.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

NAMES = ("anvil", "bucket", "chisel", "drill", "easel", "file", "gimlet", "hammer", "level")
_DETAILS = re.compile(r"^/products/(\d+)$")


def catalogue(count: int) -> list[dict[str, Any]]:
    """The products the server lists: ids 1 to ``count``."""
    return [{"id": i, "name": f"{NAMES[i % len(NAMES)]}-{i}"} for i in range(1, count + 1)]


def details(product_id: int) -> dict[str, Any]:
    """What ``/products/<id>`` answers: a price and a stock figure made from the id."""
    return {"id": product_id, "price": round(1.5 * product_id + 0.99, 2), "stock": product_id % 7}


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the request threads
    products: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        target = urlsplit(self.path)
        if target.path == "/products":
            query = parse_qs(target.query)
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", ["10"])[0])
            products = self.server.products
            self._reply(200, {"data": products[offset : offset + limit], "total": len(products)})
        elif (match := _DETAILS.match(target.path)) is not None:
            product_id = int(match.group(1))
            if 1 <= product_id <= len(self.server.products):
                self._reply(200, details(product_id))
            else:
                self._reply(404, {"error": f"no product {product_id}"})
        else:
            self._reply(404, {"error": f"no such path {target.path}"})

    def _reply(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the example prints its own summary


@contextlib.contextmanager
def serving(count: int = 25) -> Iterator[str]:
    """Serve a catalogue of ``count`` products; yields the base URL ``http://127.0.0.1:PORT``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.products = catalogue(count)
    thread = threading.Thread(target=server.serve_forever, name="example-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
