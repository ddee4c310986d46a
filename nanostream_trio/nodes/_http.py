"""HTTP nodes on httpx: HttpRequest (a processor), HttpPost (a sink), HttpPoll (a source).

httpx is an optional dependency (the ``[http]`` extra); this module imports it
only when a node is constructed, so ``import nanostream_trio`` works without
it. Each node opens one ``httpx.AsyncClient`` in its ``setup`` (connection
pooling) and closes it in its ``teardown``; httpx runs natively on Trio
through anyio, so timeouts, backoffs and rate limits all use the Trio clock.

The pieces shared by the three nodes are :class:`_Sender` (one request with
retries: exponential backoff with jitter on connection errors, timeouts, 429
and 5xx, honouring ``Retry-After``; other 4xx raise :class:`HttpStatusError`)
and :func:`_fill` (``{field}`` templates filled from a dict item).

HttpRequest with ``concurrency=1`` is one stage whose async ``process_item``
sends the item's request. With ``concurrency=N`` an async ``process_item``
cannot hold N requests at once (the engine calls it one item at a time), so
the node becomes a small composite (see ``_stages.py``)::

    <name>.intake --+--> <name>.emit --> <name>   (the policy stage)
                    '--> <name>.fetch

``intake`` takes a window slot per item (at most ``window`` items between
intake and the policy stage: in flight, waiting to be reordered or to be
handed on) and queues it; ``fetch`` runs up to N requests at once in its own
nursery, inside one long
``process_item`` call that yields nothing (so no nursery is ever held across
a ``yield``); ``emit`` hands the items on in input order (or as they
complete) and the policy stage raises an item's error there, so ``on_error``
sees the original item, and frees its window slot. The fetch and emit loops
end at each checkpoint barrier and start again after it (see :class:`_Burst`),
so barriers pass with every request before them answered and handed on.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http
import json
import math
import random
import string
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Unpack

import trio

from .._exceptions import ConfigError, NanostreamError
from .._items import Items
from .._node import NanoNode
from .._policy import short_repr
from ._stages import EngineOptions, _Staged

if TYPE_CHECKING:
    import httpx

__all__ = [
    "HttpPoll",
    "HttpPost",
    "HttpRequest",
    "HttpResponse",
    "HttpStatusError",
    "HttpTemplateError",
]

Decode = Literal["auto", "json", "text", "bytes"]
_DECODES: Final = ("auto", "json", "text", "bytes")
_POST_FORMATS: Final = ("json", "array", "ndjson")
_IDLE_YIELD: Final = 1.0  # seconds between empty Items() while HttpPoll waits (checkpoints)


def _require_httpx(node: str) -> None:
    try:
        import httpx  # noqa: F401
    except ImportError as exc:
        msg = (
            f"node {node!r} needs httpx, which is not installed; "
            "install the extra: pip install 'nanostream-trio[http]'"
        )
        raise ImportError(msg, name="httpx") from exc


# -- errors -----------------------------------------------------------------------


class HttpStatusError(NanostreamError, RuntimeError):
    """The server answered with an error status (after retries, for 429 and 5xx).

    Raised from the node's per-item call, so the node's ``on_error`` policy
    decides what happens (a dead letter's ``message`` holds status, URL and body).

    Attributes:
        status: the HTTP status code.
        method: the request's method.
        url: the request's URL.
        body: the response body as text (whole; shortened in the message).
        headers: the response headers (lower-case names).
        attempts: how many times the request was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        method: str,
        url: str,
        body: str,
        headers: Mapping[str, str],
        attempts: int,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = url
        self.body = body
        self.headers = dict(headers)
        self.attempts = attempts


class HttpTemplateError(NanostreamError, ValueError):
    """An item that lacks a field a ``{field}`` template of the node needs.

    Attributes:
        node: the node's name.
        template: the template being filled.
        field: the missing field.
    """

    def __init__(self, message: str, *, node: str, template: str, field: str) -> None:
        super().__init__(message)
        self.node = node
        self.template = template
        self.field = field


# -- what HttpRequest emits -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class HttpResponse:
    """What HttpRequest emits for each item: the decoded body with the response's details.

    Attributes:
        body: the decoded body: the JSON value, ``str`` or ``bytes`` (see ``decode``).
        status: the HTTP status code.
        headers: the response headers, names in lower case (repeated headers joined by ``, ``).
        url: the URL requested (after templates were filled).
        item: the input item the request was made for (to join the answer to it).
    """

    body: Any
    status: int
    headers: dict[str, str]
    url: str
    item: Any


# -- templates ----------------------------------------------------------------------


def _template_fields(node: str, key: str, template: str) -> list[str]:
    """The field names of a ``{field}`` template; ConfigError if it does not parse."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        msg = (
            f"node {node!r} got {key}={template!r}, which is not a valid template ({exc}); "
            "write fields as {name} and literal braces as {{ and }}"
        )
        raise ConfigError(msg, node=node, key=key) from None
    fields = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if field == "" or field.isdigit():
            msg = (
                f"node {node!r} got {key}={template!r}: every field needs a name, "
                "as in {id}; positional fields like {} or {0} are not filled from items"
            )
            raise ConfigError(msg, node=node, key=key)
        fields.append(field)
    return fields


def _check_templates(node: str, key: str, value: Any) -> None:
    """Check every string template inside ``value`` (nested dicts and lists too)."""
    if isinstance(value, str):
        _template_fields(node, key, value)
    elif isinstance(value, Mapping):
        for inner in value.values():
            _check_templates(node, key, inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            _check_templates(node, key, inner)


def _fields_of(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    return {"item": item}


def _fill(node: str, template: str, item: Any) -> str:
    """``template`` with its ``{field}`` s taken from ``item`` (a dict, or ``{item}`` itself)."""
    fields = _fields_of(item)
    try:
        return template.format_map(fields)
    except (KeyError, IndexError, AttributeError) as exc:
        missing = str(exc.args[0]) if exc.args else "?"
        present = ", ".join(map(str, fields)) or "none"
        msg = (
            f"node {node!r} cannot fill template {template!r}: the item has no field "
            f"{missing!r} (item {short_repr(item)}; its fields: {present})"
        )
        raise HttpTemplateError(msg, node=node, template=template, field=missing) from None


def _fill_value(node: str, value: Any, item: Any) -> Any:
    """Fill templates inside a JSON body: a string that is exactly ``{field}`` keeps its type."""
    if isinstance(value, str):
        fields = _template_fields(node, "json", value)
        if len(fields) == 1 and value == "{" + fields[0] + "}":
            whole = _fields_of(item)
            if fields[0] in whole:
                return whole[fields[0]]
        return _fill(node, value, item)
    if isinstance(value, Mapping):
        return {key: _fill_value(node, inner, item) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_fill_value(node, inner, item) for inner in value]
    return value


def _check_url(node: str, url: Any) -> str:
    if not isinstance(url, str) or not url:
        msg = f"node {node!r} needs a url (a non-empty string); got {short_repr(url)}"
        raise ConfigError(msg, node=node, key="url")
    _template_fields(node, "url", url)
    if not url.startswith("{") and not url.lower().startswith(("http://", "https://")):
        msg = (
            f"node {node!r} got url={url!r}; it must start with http:// or https:// "
            "(or with a {field} holding a whole URL)"
        )
        raise ConfigError(msg, node=node, key="url")
    return url


# -- sending with retries ---------------------------------------------------------------


def _headers_dict(headers: httpx.Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key, value in headers.multi_items():
        name = key.lower()
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait (``Retry-After``: seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # An HTTP date is wall-clock time: compare it with the wall clock, then wait on Trio's.
    return max(0.0, when.timestamp() - time.time())


def _decode_body(response: httpx.Response, decode: Decode) -> Any:
    """The body as JSON, text or bytes; ``"auto"`` goes by the Content-Type."""
    if decode == "auto":
        kind = response.headers.get("content-type", "").lower()
        if "json" in kind:
            decode = "json"
        elif kind.startswith("text/") or "charset=" in kind or not response.content:
            decode = "text"
        else:
            decode = "bytes"
    if decode == "bytes":
        return response.content
    if decode == "text":
        return response.text
    if not response.content:
        return None
    return json.loads(response.content)


class _RateLimit:
    """At most ``rate`` requests per second on the Trio clock, ``burst`` back to back.

    A virtual schedule (GCRA): each request takes the next free slot, so
    concurrent callers are spaced fairly without a lock.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.spacing = 1.0 / rate
        self.slack = (burst - 1) * self.spacing
        self.next_slot = -math.inf

    async def wait(self) -> None:
        now = trio.current_time()
        slot = max(self.next_slot, now - self.slack)
        self.next_slot = slot + self.spacing
        if slot > now:
            await trio.sleep_until(slot)
        else:
            await trio.lowlevel.checkpoint()


@dataclasses.dataclass
class _Sender:
    """Sends one request with the node's retries; shared by the three nodes."""

    node: NanoNode
    retries: int
    backoff: float
    max_backoff: float
    jitter: float
    rate: _RateLimit | None
    client: httpx.AsyncClient | None = None
    users: int = 0
    random: random.Random = dataclasses.field(default_factory=random.Random)

    def open(self, timeout: float | None, headers: Mapping[str, str] | None) -> None:
        import httpx

        self.users += 1
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=timeout, headers=dict(headers or {}))

    async def close(self) -> None:
        self.users -= 1
        if self.users <= 0 and self.client is not None:
            client, self.client = self.client, None
            self.users = 0
            with trio.CancelScope(shield=True):  # close the pool even when cancelled
                await client.aclose()

    def delay(self, failures: int) -> float:
        """Seconds before attempt ``failures + 1``: exponential, capped, with +/- jitter."""
        base = min(self.backoff * 2.0 ** (failures - 1), self.max_backoff)
        if not self.jitter:
            return base
        return base * self.random.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    async def send(self, method: str, url: str, **request: Any) -> httpx.Response:
        """The response of the first attempt that is not retryable (2xx or 3xx).

        Raises:
            HttpStatusError: a 4xx other than 429, or a 429/5xx after the last retry.
            httpx.TransportError: a connection error or timeout after the last retry.
        """
        import httpx

        client = self.client
        if client is None:  # pragma: no cover - setup() opens it
            msg = f"node {self.node.name!r} sent a request before its setup() ran"
            raise RuntimeError(msg)
        attempt = 0
        while True:
            attempt += 1
            if self.rate is not None:
                await self.rate.wait()
            try:
                response = await client.request(method, url, **request)
            except httpx.TransportError as exc:
                if attempt > self.retries:
                    exc.add_note(
                        f"{method} {url} failed ({type(exc).__name__}) after {attempt} attempts"
                    )
                    raise
                wait = self.delay(attempt)
                reason = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                retryable = status == 429 or status >= 500
                if status < 400:
                    return response
                if not retryable or attempt > self.retries:
                    raise self.status_error(response, method, url, attempt)
                after = _retry_after(response)
                wait = after if after is not None else self.delay(attempt)
                reason = f"HTTP {status}"
            self.node.log_event(
                "http_retry",
                level="warning",
                method=method,
                url=url,
                attempt=attempt,
                delay=wait,
                reason=reason,
            )
            await trio.sleep(wait)

    def status_error(
        self, response: httpx.Response, method: str, url: str, attempts: int
    ) -> HttpStatusError:
        body = response.text
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        status = f"HTTP {response.status_code}"
        phrase = response.reason_phrase or _standard_phrase(response.status_code)
        if phrase:
            status = f"{status} {phrase}"
        msg = (
            f"node {self.node.name!r}: {method} {url} answered {status}{tries}; "
            f"body: {short_repr(body)}"
        )
        return HttpStatusError(
            msg,
            status=response.status_code,
            method=method,
            url=url,
            body=body,
            headers=_headers_dict(response.headers),
            attempts=attempts,
        )


def _standard_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _check_common(
    node: str,
    *,
    timeout: float | None,
    retries: int,
    backoff: float,
    max_backoff: float,
    jitter: float,
    decode: str,
    rate: float | None,
    burst: int,
) -> None:
    problems = []
    if timeout is not None and not timeout > 0:
        problems.append(f"timeout={timeout!r} (seconds > 0, or None for no timeout)")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        problems.append(f"retries={retries!r} (a whole number >= 0)")
    if backoff < 0 or max_backoff < 0:
        problems.append(f"backoff={backoff!r}, max_backoff={max_backoff!r} (seconds >= 0)")
    if not 0 <= jitter < 1:
        problems.append(f"jitter={jitter!r} (a fraction, 0 <= jitter < 1)")
    if decode not in _DECODES:
        problems.append(f"decode={decode!r} (one of {', '.join(_DECODES)})")
    if rate is not None and not rate > 0:
        problems.append(f"rate={rate!r} (requests per second > 0, or None)")
    if not isinstance(burst, int) or burst < 1:
        problems.append(f"burst={burst!r} (a whole number >= 1)")
    if problems:
        msg = f"node {node!r} got " + "; ".join(problems)
        raise ConfigError(msg, node=node, key=problems[0].split("=", 1)[0])


# -- HttpRequest ------------------------------------------------------------------------


class HttpRequest(_Staged):
    """Send one HTTP request per item and emit an :class:`HttpResponse` for it.

    ``url``, the values of ``headers`` and ``params``, and the strings inside
    ``json`` are templates: ``{field}`` is replaced by the item's field (for a
    dict item) or ``{item}`` by the item itself. In ``json`` a string that is
    exactly ``"{field}"`` takes the field's value with its type. An item
    without a field a template needs raises :class:`HttpTemplateError`.

    Connection errors, timeouts, 429 and 5xx answers are retried ``retries``
    times, waiting ``backoff * 2 ** (n - 1)`` seconds (at most
    ``max_backoff``, times a random factor in ``1 +/- jitter``) or what the
    answer's ``Retry-After`` says. Then, and for any other 4xx at once, the
    item fails through the node's ``on_error`` policy: an
    :class:`HttpStatusError` (with ``status`` and ``body``) or the httpx
    exception. ``on_error="retry"`` sends the request again after the
    policy's own backoff.

    Up to ``concurrency`` requests are in flight at once; outputs keep the
    input order (``ordered=True``), or come as answers arrive. Memory is
    bounded by ``window`` items: the node takes no new item while that many
    are between its input and its output (in flight, or answered and waiting
    for an earlier item's answer).

    Args:
        url: the URL template.
        method: the HTTP method.
        headers: headers (values are templates).
        params: query parameters (values are templates).
        json: a JSON body (strings inside are templates).
        concurrency: requests in flight at once.
        ordered: emit in input order (else in completion order).
        window: the most items in the node at once (default ``4 * concurrency``,
            at least ``concurrency``): the reorder buffer's bound.
        rate: at most this many requests per second (all attempts count), or None.
        burst: requests that may go back to back under ``rate``.
        timeout: seconds for connecting, each read and each write (None: no timeout).
        retries: further attempts after a retryable failure.
        backoff: seconds before the first retry.
        max_backoff: the longest wait between two attempts (unless Retry-After asks more).
        jitter: the random spread of each backoff, as a fraction of it.
        decode: ``"auto"`` (JSON for a JSON content type, else text or bytes),
            ``"json"``, ``"text"`` or ``"bytes"``.
        output: ``"response"`` to emit an :class:`HttpResponse`, ``"body"`` to
            emit only the decoded body (handy in pipeline files).
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).

    Raises:
        ImportError: httpx is not installed (``pip install 'nanostream-trio[http]'``).
        ConfigError: a bad URL, template or option.

    Example::

        ids > HttpRequest("https://api.example/users/{id}", concurrency=8) > sink
    """

    def __init__(
        self,
        url: str,
        method: str = "GET",
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        concurrency: int = 1,
        ordered: bool = True,
        window: int | None = None,
        rate: float | None = None,
        burst: int = 1,
        timeout: float | None = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: float = 0.1,
        decode: Decode = "auto",
        output: Literal["response", "body"] = "response",
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        label = name or "HttpRequest"
        _require_httpx(label)
        self.url = _check_url(label, url)
        _check_common(
            label,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            jitter=jitter,
            decode=decode,
            rate=rate,
            burst=burst,
        )
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            msg = f"node {label!r} got concurrency={concurrency!r}; expected a whole number >= 1"
            raise ConfigError(msg, node=label, key="concurrency")
        if output not in ("response", "body"):
            msg = f"node {label!r} got output={output!r}; accepted: 'response', 'body'"
            raise ConfigError(msg, node=label, key="output")
        if window is None:
            window = 4 * concurrency
        if not isinstance(window, int) or isinstance(window, bool) or window < concurrency:
            msg = (
                f"node {label!r} got window={window!r}; expected a whole number "
                f">= concurrency ({concurrency})"
            )
            raise ConfigError(msg, node=label, key="window")
        for key, value in (("headers", headers), ("params", params), ("json", json)):
            _check_templates(label, key, value)
        self.method = method.upper()
        self.headers = dict(headers or {})
        self.params = dict(params or {})
        self.json = json
        self.concurrency = concurrency
        self.ordered = ordered
        self.window = window
        self.timeout = timeout
        self.decode: Decode = decode
        self.output = output
        self._sender = _Sender(
            self,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            jitter=jitter,
            rate=_RateLimit(rate, burst) if rate is not None else None,
        )
        self._ns_build()
        super().__init__(name, **engine)

    def _ns_build(self) -> None:
        self._caller = _Call(self)
        if self.concurrency == 1:
            self._ns_set_stages([("request", self._caller)], self._caller)
            return
        intake, fetcher, emitter = _Intake(self), _Fetch(self), _Emit(self)
        self._ns_set_stages(
            [("intake", intake), ("emit", emitter), ("request", self._caller)], self._caller
        )
        _ = intake > fetcher
        self._ns_stages = (
            ("intake", intake),
            ("fetch", fetcher),
            ("emit", emitter),
            ("request", self._caller),
        )
        self._ns_rename(self._ns_name)

    def _reset(self) -> None:
        """Fresh window state for a run (called by the intake's setup)."""
        self._window = trio.Semaphore(self.window)
        self._in_flight = trio.Semaphore(self.concurrency)
        self._next_in = 0  # sequence number of the next item taken
        # What the policy stage reports, in the order the emit stage handed the items on.
        self._outcomes: deque[tuple[Any, Exception | None]] = deque()

    async def _fetch(self, item: Any) -> Any:
        """Send the request for ``item`` (with retries) and decode the answer."""
        node = self.name
        url = _fill(node, self.url, item)
        request: dict[str, Any] = {}
        if self.headers:
            request["headers"] = {k: _fill(node, str(v), item) for k, v in self.headers.items()}
        if self.params:
            request["params"] = {
                k: _fill(node, v, item) if isinstance(v, str) else v for k, v in self.params.items()
            }
        if self.json is not None:
            request["json"] = _fill_value(node, self.json, item)
        response = await self._sender.send(self.method, url, **request)
        body = _decode_body(response, self.decode)
        if self.output == "body":
            return body
        return HttpResponse(
            body=body,
            status=response.status_code,
            headers=_headers_dict(response.headers),
            url=str(response.url),
            item=item,
        )


class _Call(NanoNode):
    """HttpRequest's policy stage: sends the request itself, or reports the window's outcome."""

    def __init__(self, owner: HttpRequest) -> None:
        super().__init__()
        self.owner = owner
        self._failed: Any = None  # the item whose outcome was an error, for a policy retry
        self._calls = 0

    def setup(self) -> None:
        self.owner._sender.open(self.owner.timeout, None)
        self._failed = None
        self._calls = 0

    async def teardown(self) -> None:
        await self.owner._sender.close()

    async def process_item(self, item: Any) -> Any:
        owner = self.owner
        if owner.concurrency == 1:
            return await owner._fetch(item)
        if self._failed is item and self._is_policy_retry():
            self._calls += 1
            value = await owner._fetch(item)
            self._failed = None  # the next item, even the same object, is a new one
            return value
        value, error = owner._outcomes.popleft()
        owner._window.release()
        if error is not None:
            self._failed, self._calls = item, 1
            raise error
        self._failed = None
        return value

    def _is_policy_retry(self) -> bool:
        # The engine calls again with the same item only under "retry", while attempts remain.
        return self.on_error == "retry" and self._calls < self._ns_retry.attempts


class _Burst:
    """The items of one run of the fetch and emit loops: from a first item to a barrier or the end.

    A checkpoint barrier can only pass a node between two ``process_item``
    calls, so the fetch and emit loops (each one long call) end at every
    barrier: the intake closes the burst's queue when it takes the barrier
    (its ``snapshot()``), the loops finish the burst's requests, hand its
    items on and return, and the barrier passes them with everything before
    it done. The next item starts a new burst, after the barrier.
    """

    def __init__(self, window: int) -> None:
        self.queue_send, self.queue_receive = trio.open_memory_channel[tuple[int, Any]](window)
        self.next_out: int | None = None  # sequence number of the next item to emit (ordered)
        self.done: dict[int, tuple[Any, Any, Exception | None]] = {}
        self.arrivals: deque[int] = deque()  # completion order (unordered)
        self.fetched_all = False
        self.changed = trio.Event()


class _Intake(NanoNode):
    """Takes a window slot per item and queues the item for the fetch stage."""

    def __init__(self, owner: HttpRequest) -> None:
        super().__init__(on_error="raise")
        self.owner = owner
        self._burst: _Burst | None = None

    def setup(self) -> None:
        self.owner._reset()
        self._burst = None

    async def process_item(self, item: Any) -> _Burst | None:
        owner = self.owner
        await owner._window.acquire()
        burst = self._burst
        new = burst is None
        if burst is None:
            burst = self._burst = _Burst(owner.window)
            burst.next_out = owner._next_in
        # Never waits: the window bounds what is queued.
        burst.queue_send.send_nowait((owner._next_in, item))
        owner._next_in += 1
        return burst if new else None  # a new burst starts the fetch and emit loops

    def snapshot(self) -> None:
        """At a barrier: end the burst, so the barrier passes the loops once it is done."""
        self._end_burst()

    def finish(self) -> None:
        self._end_burst()

    def teardown(self) -> None:
        self._end_burst()

    def _end_burst(self) -> None:
        if self._burst is not None:
            self._burst.queue_send.close()
            self._burst = None


class _Fetch(NanoNode):
    """Runs up to ``concurrency`` requests at once in a nursery of its own."""

    def __init__(self, owner: HttpRequest) -> None:
        super().__init__(on_error="raise")
        self.owner = owner

    def setup(self) -> None:
        self.owner._sender.open(self.owner.timeout, None)

    async def teardown(self) -> None:
        await self.owner._sender.close()

    async def process_item(self, burst: _Burst) -> None:
        in_flight = self.owner._in_flight
        with burst.queue_receive:
            async with trio.open_nursery() as nursery:
                async for seq, item in burst.queue_receive:
                    await in_flight.acquire()
                    nursery.start_soon(self._one, burst, seq, item)
        burst.fetched_all = True
        burst.changed.set()

    async def _one(self, burst: _Burst, seq: int, item: Any) -> None:
        owner = self.owner
        try:
            result: tuple[Any, Any, Exception | None] = (item, await owner._fetch(item), None)
        except Exception as exc:  # reported by the policy stage, with the item
            result = (item, None, exc)
        finally:
            owner._in_flight.release()
        burst.done[seq] = result
        burst.arrivals.append(seq)
        burst.changed.set()


class _Emit(NanoNode):
    """Hands a burst's items on in input order (or completion order), outcomes aside."""

    def __init__(self, owner: HttpRequest) -> None:
        super().__init__(on_error="raise")
        self.owner = owner

    async def process_item(self, burst: _Burst) -> AsyncIterator[Any]:
        outcomes = self.owner._outcomes
        while True:
            changed = burst.changed = trio.Event()
            for item, value, error in self._ready(burst):
                outcomes.append((value, error))
                yield item
            if burst.fetched_all and not burst.done:
                return
            if not changed.is_set():
                await changed.wait()

    def _ready(self, burst: _Burst) -> list[tuple[Any, Any, Exception | None]]:
        ready = []
        if self.owner.ordered:
            while burst.next_out in burst.done:
                ready.append(burst.done.pop(burst.next_out))
                burst.next_out += 1
        else:
            while burst.arrivals:
                ready.append(burst.done.pop(burst.arrivals.popleft()))
        return ready


# -- HttpPost ------------------------------------------------------------------------


class HttpPost(NanoNode):
    """A sink that sends items as JSON: one per request, or a batch per request.

    ``format="json"`` sends each item as the JSON body of its own request;
    ``"array"`` sends ``batch_size`` items as one JSON array and ``"ndjson"``
    as newline-delimited JSON (``application/x-ndjson``). A partial batch is
    sent at the end of the input and at every checkpoint barrier
    (``prepare``), so a checkpoint covers only items the server has
    accepted. Retries as in :class:`HttpRequest`.

    A request that fails for good fails the item that completed its batch,
    through ``on_error``; the error's notes say how many items the batch
    held (under ``"skip"`` or ``"dead_letter"`` the whole batch is dropped).
    ``on_error="retry"`` sends the same batch again.

    Args:
        url: where to send (no templates: one URL for all items).
        batch_size: items per request.
        format: ``"json"``, ``"array"`` or ``"ndjson"``; default ``"json"`` for
            ``batch_size=1``, else ``"array"``.
        method: the HTTP method.
        headers: headers for every request.
        rate, burst, timeout, retries, backoff, max_backoff, jitter: as in
            :class:`HttpRequest`.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).

    Raises:
        ImportError: httpx is not installed (``pip install 'nanostream-trio[http]'``).
        ConfigError: a bad URL or option.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 1,
        format: Literal["json", "array", "ndjson"] | None = None,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        rate: float | None = None,
        burst: int = 1,
        timeout: float | None = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: float = 0.1,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        _require_httpx(self.name)
        self.url = _check_url(self.name, url)
        if "{" in url:
            msg = f"node {self.name!r} got url={url!r}; HttpPost sends to one URL (no templates)"
            raise ConfigError(msg, node=self.name, key="url")
        _check_common(
            self.name,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            jitter=jitter,
            decode="auto",
            rate=rate,
            burst=burst,
        )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            msg = f"node {self.name!r} got batch_size={batch_size!r}; expected a whole number >= 1"
            raise ConfigError(msg, node=self.name, key="batch_size")
        if format is None:
            format = "json" if batch_size == 1 else "array"
        if format not in _POST_FORMATS or (format == "json" and batch_size > 1):
            msg = (
                f"node {self.name!r} got format={format!r} with batch_size={batch_size}; "
                "accepted: 'json' (one item per request, batch_size=1), 'array' or 'ndjson'"
            )
            raise ConfigError(msg, node=self.name, key="format")
        self.batch_size = batch_size
        self.format = format
        self.method = method.upper()
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._sender = _Sender(
            self,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            jitter=jitter,
            rate=_RateLimit(rate, burst) if rate is not None else None,
        )
        self._buffer: list[Any] = []
        self._failed: tuple[Any, list[Any]] | None = None  # (item, batch) for a policy retry
        #: Items the server has accepted in this run.
        self.sent = 0

    def setup(self) -> None:
        """Open the node's HTTP client; start with an empty buffer."""
        self._sender.open(self.timeout, self.headers)
        self._buffer = []
        self._failed = None
        self.sent = 0

    async def teardown(self) -> None:
        """Close the HTTP client."""
        await self._sender.close()

    async def process_item(self, item: Any) -> None:
        """Buffer ``item``; send the buffer when it holds ``batch_size`` items."""
        if self._failed is not None and self._failed[0] is item and self.on_error == "retry":
            batch = self._failed[1]
        else:
            self._buffer.append(item)
            if len(self._buffer) < self.batch_size:
                return
            batch, self._buffer = self._buffer, []
        self._failed = (item, batch)
        try:
            await self._send(batch)
        except Exception as exc:
            if len(batch) > 1:
                exc.add_note(f"the batch of {len(batch)} items this item completed was not sent")
            raise
        self._failed = None

    async def finish(self) -> None:
        """Send the last, partial batch."""
        await self._flush()

    async def prepare(self, n: int) -> None:
        """At checkpoint barrier ``n``: send the buffered items, so the checkpoint covers them."""
        await self._flush()

    async def _flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            await self._send(batch)

    async def _send(self, batch: list[Any]) -> None:
        if self.format == "json":
            await self._sender.send(self.method, self.url, json=batch[0])
        elif self.format == "array":
            await self._sender.send(self.method, self.url, json=batch)
        else:
            body = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in batch)
            headers = {"content-type": "application/x-ndjson"}
            await self._sender.send(self.method, self.url, content=body, headers=headers)
        self.sent += len(batch)


# -- HttpPoll ---------------------------------------------------------------------------


class HttpPoll(NanoNode):
    """A source that fetches ``url`` every ``interval`` seconds and emits each page's body.

    One *poll* fetches ``url`` and follows pagination to the last page:
    the next page's URL (absolute, or relative to the page) is the body's
    field ``next_field`` (a dotted path like ``"links.next"`` reaches into
    nested objects); or, with ``cursor_param``, ``url`` with that query
    parameter set to the body's field ``cursor_field`` (an opaque cursor);
    or, with ``offset_param``, ``url`` with that query parameter set to the
    offset of the page's first item (0, then advanced by the number of items
    in each page: the list at the body's ``items_field``, or the body itself);
    or else the ``Link: <...>; rel="next"`` header. Every
    page's decoded body is emitted, the first included. A poll stops at a
    page without a next URL (no cursor; in offset mode a page shorter than
    ``page_size``, or an empty one), at a URL it has already fetched in this
    poll, or after ``max_pages``.

    With ``conditional=True`` the first page is fetched with
    ``If-None-Match`` once the server has sent an ``ETag``: a ``304`` means
    nothing changed, and the poll emits nothing.

    Checkpoints: the position is the next page within a poll (its URL; in
    cursor and offset modes the cursor or offset itself, from which the URL is
    built again on restore) and the ETag, so a restart resumes the pagination
    after the last page emitted (a page may be emitted twice, never lost:
    at-least-once). Between polls the source yields an empty ``Items()``
    every second so barriers pass.

    Args:
        url: the first page's URL.
        interval: seconds from the start of one poll to the start of the next.
        next_field: the body's field holding the next page's URL.
        cursor_param: the query parameter that takes the next page's cursor.
        cursor_field: the body's field holding that cursor (with ``cursor_param``).
        offset_param: the query parameter that takes the offset of a page's first item.
        page_size: items per page in offset mode: a shorter page is the last
            (None: the poll ends at an empty page).
        limit_param: the query parameter that takes ``page_size`` (None: not sent).
        items_field: the body's field holding a page's items in offset mode
            (None: the body is the list).
        polls: how many polls before the source ends (None: until stopped).
        max_pages: the most pages one poll fetches (None: no limit).
        conditional: use ETag / If-None-Match on the first page.
        headers: sent with every request (no templates).
        params: query parameters of the first page (next URLs carry their own).
        rate, burst, timeout, retries, backoff, max_backoff, jitter, decode: as
            in :class:`HttpRequest`.
        name: the node's name.
        **engine: ``capacity`` and the other engine settings (see :class:`NanoNode`).

    Raises:
        ImportError: httpx is not installed (``pip install 'nanostream-trio[http]'``).
        ConfigError: a bad URL or option.
    """

    def __init__(
        self,
        url: str,
        interval: float = 60.0,
        *,
        next_field: str | None = None,
        cursor_param: str | None = None,
        cursor_field: str | None = None,
        offset_param: str | None = None,
        page_size: int | None = None,
        limit_param: str | None = None,
        items_field: str | None = None,
        polls: int | None = None,
        max_pages: int | None = None,
        conditional: bool = True,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        rate: float | None = None,
        burst: int = 1,
        timeout: float | None = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: float = 0.1,
        decode: Decode = "auto",
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        _require_httpx(self.name)
        self.url = _check_url(self.name, url)
        if "{" in url:
            msg = f"node {self.name!r} got url={url!r}; HttpPoll polls one URL (no templates)"
            raise ConfigError(msg, node=self.name, key="url")
        _check_common(
            self.name,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            jitter=jitter,
            decode=decode,
            rate=rate,
            burst=burst,
        )
        problems = []
        if not interval >= 0:
            problems.append(f"interval={interval!r} (seconds >= 0)")
        if polls is not None and (not isinstance(polls, int) or polls < 1):
            problems.append(f"polls={polls!r} (a whole number >= 1, or None)")
        if max_pages is not None and (not isinstance(max_pages, int) or max_pages < 1):
            problems.append(f"max_pages={max_pages!r} (a whole number >= 1, or None)")
        if next_field is not None and (not isinstance(next_field, str) or not next_field):
            problems.append(f"next_field={next_field!r} (a field name, or None)")
        if (cursor_param is None) != (cursor_field is None):
            problems.append(
                f"cursor_param={cursor_param!r} with cursor_field={cursor_field!r} "
                "(give both, or neither)"
            )
        elif next_field is not None and cursor_param is not None:
            problems.append(f"cursor_param={cursor_param!r} (not together with next_field)")
        problems.extend(
            _offset_problems(
                offset_param=offset_param,
                page_size=page_size,
                limit_param=limit_param,
                items_field=items_field,
                other_mode=next_field is not None or cursor_param is not None,
            )
        )
        if problems:
            msg = f"node {self.name!r} got " + "; ".join(problems)
            raise ConfigError(msg, node=self.name, key=problems[0].split("=", 1)[0])
        self.interval = interval
        self.next_field = next_field
        self.cursor_param = cursor_param
        self.cursor_field = cursor_field
        self.offset_param = offset_param
        self.page_size = page_size
        self.limit_param = limit_param
        self.items_field = items_field
        self.polls = polls
        self.max_pages = max_pages
        self.conditional = conditional
        self.headers = dict(headers or {})
        self.params = dict(params or {})
        self.timeout = timeout
        self.decode: Decode = decode
        self._sender = _Sender(
            self,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            jitter=jitter,
            rate=_RateLimit(rate, burst) if rate is not None else None,
        )
        self._resume: str | None = None  # the next page of an unfinished poll
        # Its cursor or offset in those modes (the position; _resume is built from it).
        self._position: Any = None
        self._etag: str | None = None
        #: Pages emitted in this run; polls answered 304 Not Modified in this run.
        self.pages = 0
        self.not_modified = 0

    def setup(self) -> None:
        """Open the node's HTTP client."""
        self._sender.open(self.timeout, self.headers)
        self.pages = 0
        self.not_modified = 0

    async def teardown(self) -> None:
        """Close the HTTP client."""
        await self._sender.close()

    @property
    def _mode(self) -> Literal["cursor", "offset", "url"]:
        if self.cursor_param is not None:
            return "cursor"
        if self.offset_param is not None:
            return "offset"
        return "url"

    def snapshot(self) -> dict[str, Any]:
        """The position: the next page of the poll in progress (or None) and the ETag.

        In cursor mode ``"cursor"`` holds the next page's cursor, in offset
        mode ``"offset"`` its offset; ``"next"`` is the page's URL in every mode.
        """
        state: dict[str, Any] = {"next": self._resume, "etag": self._etag}
        if self._mode != "url":
            state[self._mode] = self._position
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Resume the pagination where the checkpoint left it."""
        self._etag = state.get("etag")
        self._resume = state.get("next")
        self._position = None
        mode = self._mode
        if mode != "url" and state.get(mode) is not None:
            # The cursor or offset is the position: the URL follows from today's options.
            self._position = state[mode]
            self._resume = self._page_url(self._position)

    async def generator(self) -> AsyncIterator[Any]:
        """Poll, emitting every page; wait ``interval`` between polls, yielding ``Items()``."""
        done = 0
        while self.polls is None or done < self.polls:
            started = trio.current_time()
            async for page in self._poll():
                yield page
            done += 1
            if self.polls is not None and done >= self.polls:
                return
            deadline = started + self.interval
            while (remaining := deadline - trio.current_time()) > 0:
                await trio.sleep(min(_IDLE_YIELD, remaining))
                yield Items()

    async def _poll(self) -> AsyncIterator[Any]:
        first = self._resume is None
        position = self._position
        if self._resume is not None:
            url = self._resume
        elif self._mode == "offset":
            url, position = self._page_url(0), 0
        else:
            url = self.url
        seen: set[str] = set()
        pages = 0
        while True:
            headers = {}
            if first and self.conditional and self._etag is not None:
                headers["if-none-match"] = self._etag
            request: dict[str, Any] = {"headers": headers}
            if url == self.url and self.params:
                # Only the first page: a next URL carries its own query (httpx would replace it).
                request["params"] = self.params
            response = await self._sender.send("GET", url, **request)
            if response.status_code == 304:
                self.not_modified += 1
                return
            if first and self.conditional:
                self._etag = response.headers.get("etag")
            body = _decode_body(response, self.decode)
            seen.add(str(response.url))
            pages += 1
            following, position = self._following(response, body, position)
            if following is not None and (
                following in seen or (self.max_pages is not None and pages >= self.max_pages)
            ):
                following = position = None
            # The position covers this page before it is handed out (see snapshot()).
            self._resume, self._position = following, position
            self.pages += 1
            yield body
            if following is None:
                return
            url, first = following, False

    def _page_url(self, position: Any) -> str:
        """``url`` with ``params`` and the cursor or offset parameter set to ``position``."""
        import httpx

        page = httpx.URL(self.url)
        if self.params:
            page = page.copy_merge_params(self.params)
        if self.cursor_param is not None:
            return str(page.copy_set_param(self.cursor_param, str(position)))
        assert self.offset_param is not None
        if self.limit_param is not None:
            page = page.copy_set_param(self.limit_param, str(self.page_size))
        return str(page.copy_set_param(self.offset_param, str(position)))

    def _following(
        self, response: httpx.Response, body: Any, offset: Any
    ) -> tuple[str | None, Any]:
        """The next page's URL and position (cursor or offset; None in URL mode), or Nones."""
        mode = self._mode
        if mode == "cursor":
            assert self.cursor_field is not None
            cursor = _field(body, self.cursor_field)
            if cursor is None or cursor == "":
                return None, None
            return self._page_url(cursor), cursor
        if mode == "offset":
            count = len(self._page_items(body))
            if count == 0 or (self.page_size is not None and count < self.page_size):
                return None, None
            return self._page_url(offset + count), offset + count
        target: Any = None
        if self.next_field is not None:
            target = _field(body, self.next_field)
        if target is None:
            target = response.links.get("next", {}).get("url")
        if not target:
            return None, None
        return str(response.url.join(str(target))), None

    def _page_items(self, body: Any) -> list[Any]:
        items = body if self.items_field is None else _field(body, self.items_field)
        if not isinstance(items, list):
            where = "the body" if self.items_field is None else f"items_field {self.items_field!r}"
            msg = (
                f"node {self.name!r} pages by offset and counts a page's items in {where}, "
                f"which is not a list: {short_repr(items)}; set items_field to the body's "
                "field holding the page's list"
            )
            raise TypeError(msg)
        return items


def _offset_problems(
    *,
    offset_param: Any,
    page_size: Any,
    limit_param: Any,
    items_field: Any,
    other_mode: bool,
) -> list[str]:
    """What is wrong with HttpPoll's offset-paging options (empty: nothing)."""
    problems = []
    for key, value in (
        ("offset_param", offset_param),
        ("limit_param", limit_param),
        ("items_field", items_field),
    ):
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(f"{key}={value!r} (a name, or None)")
    if page_size is not None and (
        not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1
    ):
        problems.append(f"page_size={page_size!r} (a whole number >= 1, or None)")
    if offset_param is None:
        for key, value in (
            ("page_size", page_size),
            ("limit_param", limit_param),
            ("items_field", items_field),
        ):
            if value is not None:
                problems.append(f"{key}={value!r} (only with offset_param)")
    elif other_mode:
        problems.append(
            f"offset_param={offset_param!r} (not together with next_field or cursor_param)"
        )
    if limit_param is not None and page_size is None:
        problems.append(f"limit_param={limit_param!r} (needs page_size, the value it sends)")
    return problems


def _field(body: Any, path: str) -> Any:
    """``body["a"]["b"]`` for the dotted ``path`` ``"a.b"``; None where a step is missing."""
    target = body
    for part in path.split("."):
        target = target.get(part) if isinstance(target, Mapping) else None
    return target
