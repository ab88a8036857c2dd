"""Generic JSON-RPC 2.0 over HTTP (server side).

The layer knows nothing about the ledger: the node builds a `Dispatcher`, registers its methods
on it (each with the names of the params it takes) and serves it with `make_app` and
`start_site`. Only by-name params (a JSON object) are supported.

Under abuse the server degrades quietly: at most `max_connections` connections are open at once
(the next ones get HTTP 503 and are closed), a connection that sends no complete request for
`idle_timeout` seconds is closed, a client that goes away mid-request is counted and logged at
debug level, and a batch holds at most `max_batch` calls.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, overload

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

__all__ = [
    "DISPATCHER",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "UNAUTHORIZED",
    "Dispatcher",
    "HttpStats",
    "Method",
    "RpcError",
    "make_app",
    "param",
    "start_site",
]

log = logging.getLogger("tally.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHORIZED = -32001  # implementation-defined server error range (-32000..-32099)

Method = Callable[[dict[str, Any]], Awaitable[Any]]
T = TypeVar("T")


class RpcError(Exception):
    """A JSON-RPC error object; raise it from a method to answer with exactly this error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @classmethod
    def from_json(cls, error: Any) -> RpcError:
        """Rebuild an error received from a server; tolerates malformed error objects."""
        if not isinstance(error, dict):
            return cls(INTERNAL_ERROR, f"malformed error object: {error!r}")
        code, message = error.get("code"), error.get("message")
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(message, str):
            return cls(INTERNAL_ERROR, f"malformed error object: {error!r}", error.get("data"))
        return cls(code, message, error.get("data"))

    def __repr__(self) -> str:
        return f"RpcError({self.code!r}, {self.message!r}, {self.data!r})"


# --- parameter validation ---------------------------------------------------------------------


@overload
def param(
    params: Mapping[str, Any],
    name: str,
    type_: type[T],
    *,
    required: Literal[True] = ...,
    default: T | None = ...,
) -> T: ...


@overload
def param(
    params: Mapping[str, Any], name: str, type_: type[T], *, required: bool = ..., default: T
) -> T: ...


@overload
def param(
    params: Mapping[str, Any],
    name: str,
    type_: type[T],
    *,
    required: bool = ...,
    default: None = ...,
) -> T | None: ...


def param(
    params: Mapping[str, Any],
    name: str,
    type_: type[T],
    *,
    required: bool = True,
    default: T | None = None,
) -> T | None:
    """Fetch `params[name]` as a `type_` or raise RpcError(-32602).

    `type_` must be a plain class (int, str, dict, ...). bool is rejected where int or float is
    expected (JSON true is not a number), and an int is accepted (as float) where float is. An
    optional param that is absent or null yields `default`.
    """
    if name not in params or (params[name] is None and not required):
        if required:
            raise RpcError(INVALID_PARAMS, f"missing param {name!r}: expected {type_.__name__}")
        return default
    value = params[name]
    if type_ is float and isinstance(value, int) and not isinstance(value, bool):
        return cast(T, float(value))
    if not isinstance(value, type_) or (isinstance(value, bool) and type_ in (int, float)):
        raise RpcError(INVALID_PARAMS, f"invalid param {name!r}: expected {type_.__name__}")
    return value


# --- dispatcher --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    fn: Method
    admin: bool
    params: frozenset[str] | None  # the names the method takes; None: not declared (any)


@dataclass
class HttpStats:
    """The HTTP server's connection counters (reported by the node's `status`)."""

    max_connections: int | None = None
    open: int = 0  # connections open now
    refused: int = 0  # answered 503: max_connections were open
    aborted: int = 0  # the client went away before its request was read
    timed_out: int = 0  # a request body that did not arrive within the idle timeout

    def view(self) -> dict[str, int | None]:
        return {
            "connections_open": self.open,
            "max_connections": self.max_connections,
            "refused": self.refused,
            "aborted": self.aborted,
            "timed_out": self.timed_out,
        }


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    params: Any  # dict, list, or None when absent; shape is checked after method lookup
    id: Any
    notification: bool


class Dispatcher:
    """Maps method names to coroutines and answers raw JSON-RPC 2.0 request bodies.

    Admin methods need `Authorization: Bearer <admin_token>`; without an admin_token they are
    always refused (fail closed), so forgetting to configure a token never opens them.
    """

    def __init__(self, *, admin_token: str | None = None, max_batch: int | None = None) -> None:
        if admin_token == "":
            raise ValueError("admin_token must be non-empty (or None to disable admin methods)")
        self._admin_token = admin_token
        self._methods: dict[str, _Entry] = {}
        self.errors: Counter[int] = Counter()
        self.max_batch = max_batch  # calls in one batch; None: no limit
        self.http = HttpStats()

    def register(
        self, name: str, fn: Method, *, admin: bool = False, params: Iterable[str] | None = None
    ) -> None:
        """Serve `fn` as `name`.  With `params` (the names it takes), a call naming any other
        param is refused with -32602 before `fn` runs."""
        if not name or name.startswith("rpc."):  # "rpc." is reserved by the JSON-RPC spec
            raise ValueError(f"invalid method name: {name!r}")
        if name in self._methods:
            raise ValueError(f"method already registered: {name!r}")
        self._methods[name] = _Entry(fn, admin, None if params is None else frozenset(params))

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> bytes | None:
        """Answer one HTTP body; None means there is nothing to send (HTTP 204)."""
        try:
            payload = _loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self.reject(RpcError(PARSE_ERROR, "parse error"))
        if isinstance(payload, list):
            return await self._handle_batch(payload, headers)
        response = await self._handle_one(payload, headers)
        return None if response is None else self._encode(response)

    def reject(self, exc: RpcError) -> bytes:
        """Count `exc` and encode it as a response to a request whose id is unknown."""
        return self._encode(self._error(None, exc))

    async def _handle_batch(self, batch: list[Any], headers: Mapping[str, str]) -> bytes | None:
        if not batch:
            return self.reject(RpcError(INVALID_REQUEST, "empty batch"))
        if self.max_batch is not None and len(batch) > self.max_batch:
            message = f"batch too large: {len(batch)} calls (at most {self.max_batch})"
            return self.reject(RpcError(INVALID_REQUEST, message, {"max_batch": self.max_batch}))
        parts: list[bytes] = []
        # Sequential on purpose: a client batching "submit" then "query" sees its own write.
        for request in batch:
            response = await self._handle_one(request, headers)
            if response is not None:
                parts.append(self._encode(response))
        return b"[" + b",".join(parts) + b"]" if parts else None

    async def _handle_one(self, request: Any, headers: Mapping[str, str]) -> dict[str, Any] | None:
        try:
            call = _parse_call(request)
        except RpcError as exc:
            return self._error(_salvage_id(request), exc)
        try:
            result = await self._invoke(call, headers)
        except RpcError as exc:
            response = self._error(call.id, exc)  # counted even for notifications
            return None if call.notification else response
        return None if call.notification else {"jsonrpc": "2.0", "result": result, "id": call.id}

    async def _invoke(self, call: _Call, headers: Mapping[str, str]) -> Any:
        entry = self._methods.get(call.method)
        if entry is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {call.method!r}")
        if entry.admin and not self._authorized(headers):
            raise RpcError(UNAUTHORIZED, "unauthorized")
        if isinstance(call.params, list):
            raise RpcError(
                INVALID_PARAMS, "positional params are not supported; pass params as an object"
            )
        params = call.params if call.params is not None else {}
        if entry.params is not None and (unexpected := sorted(set(params) - entry.params)):
            names = ", ".join(repr(n) for n in unexpected)
            takes = ", ".join(sorted(entry.params)) or "none"
            word = "param" if len(unexpected) == 1 else "params"
            raise RpcError(INVALID_PARAMS, f"unexpected {word} {names} (takes: {takes})")
        try:
            return await entry.fn(params)
        except RpcError:
            raise
        except Exception as exc:
            log.exception("rpc method %r failed", call.method)
            raise RpcError(INTERNAL_ERROR, "internal error") from exc

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        if self._admin_token is None:
            return False
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant-time comparison so response timing does not leak the token prefix.
        return hmac.compare_digest(_utf8(token.strip()), _utf8(self._admin_token))

    def _error(self, id_: Any, exc: RpcError) -> dict[str, Any]:
        self.errors[exc.code] += 1
        return {"jsonrpc": "2.0", "error": exc.to_json(), "id": id_}

    def _encode(self, response: dict[str, Any]) -> bytes:
        try:
            return _dumps(response)
        except (TypeError, ValueError, RecursionError):
            log.exception("cannot serialise rpc response for id %r", response["id"])
        if "error" in response:  # keep the method's error code, drop its unserialisable data
            error = {"code": response["error"]["code"], "message": response["error"]["message"]}
        else:
            self.errors[INTERNAL_ERROR] += 1
            error = {"code": INTERNAL_ERROR, "message": "internal error: unserialisable result"}
        return _dumps({"jsonrpc": "2.0", "error": error, "id": response["id"]})


def _parse_call(request: Any) -> _Call:
    if not isinstance(request, dict):
        raise RpcError(INVALID_REQUEST, "invalid request: expected a JSON object")
    if request.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    method = request.get("method")
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, 'invalid request: "method" must be a string')
    if "id" in request and not _valid_id(request["id"]):
        raise RpcError(INVALID_REQUEST, 'invalid request: "id" must be a string, number or null')
    params = request.get("params")
    if "params" in request and not isinstance(params, dict | list):
        raise RpcError(INVALID_REQUEST, 'invalid request: "params" must be an object')
    return _Call(method, params, request.get("id"), notification="id" not in request)


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _salvage_id(request: Any) -> Any:
    """The id to echo in an invalid-request error: the request's own if usable, else null."""
    if isinstance(request, dict) and _valid_id(request.get("id")):
        return request.get("id")
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _HugeInt:
    """An integer literal too long to convert (Python's int_max_str_digits): valid JSON, so
    not a parse error, but no valid id or param either (-32600 / -32602)."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


def _parse_int(text: str) -> int | _HugeInt:
    try:
        return int(text)
    except ValueError:
        return _HugeInt(len(text))


def _loads(body: bytes) -> Any:
    # Decode explicitly: json.loads(bytes) would silently accept UTF-16/32 as well.
    return json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_int=_parse_int)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# --- HTTP ---------------------------------------------------------------------------------------


DISPATCHER = web.AppKey("dispatcher", Dispatcher)


def make_app(
    dispatcher: Dispatcher, *, max_body: int = 8 << 20, body_timeout: float | None = None
) -> web.Application:
    """`POST /rpc` serves the dispatcher; `GET /health` answers `{"ok": true}`.  A body that
    has not arrived `body_timeout` seconds after its headers (by default: the server's
    keepalive_timeout, the idle timeout of its connections) is answered 408 and closed."""

    async def rpc(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > max_body:
            return _too_large(dispatcher)
        try:
            timeout = request.protocol.keepalive_timeout if body_timeout is None else body_timeout
            async with asyncio.timeout(timeout):
                body = await request.read()  # enforces client_max_size for chunked bodies too
        except web.HTTPRequestEntityTooLarge:
            return _too_large(dispatcher)
        except TimeoutError:
            dispatcher.http.timed_out += 1
            log.debug("rpc request body from %s timed out", request.remote)
            response = web.Response(status=408, text="request body timed out\n")
            response.force_close()
            return response
        except (ConnectionError, RequestPayloadError) as exc:
            # A client that goes away mid-request is normal: counted, never a traceback.
            dispatcher.http.aborted += 1
            log.debug("rpc client %s went away mid-request: %s", request.remote, exc)
            response = web.Response(status=400)
            response.force_close()
            return response
        answer = await dispatcher.handle(body, request.headers)
        if answer is None:
            return web.Response(status=204)
        return web.Response(body=answer, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=max_body)
    app[DISPATCHER] = dispatcher
    app.router.add_post("/rpc", rpc)
    app.router.add_get("/health", health)
    return app


def _too_large(dispatcher: Dispatcher) -> web.Response:
    body = dispatcher.reject(RpcError(INVALID_REQUEST, "request too large"))
    return web.Response(status=413, body=body, content_type="application/json")


# --- the listener: a cap on open connections ------------------------------------------------------

_BUSY = json.dumps(
    {
        "jsonrpc": "2.0",
        "error": {"code": -32000, "message": "server busy: too many connections"},
        "id": None,
    }
).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


class _Refuse(asyncio.Protocol):
    """A connection beyond the cap: answered 503 at once and closed, without reading it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY_RESPONSE)
        transport.close()


class _Counted(asyncio.Protocol):
    """One of aiohttp's request handlers, counted while its connection is open."""

    def __init__(self, inner: asyncio.Protocol, stats: HttpStats) -> None:
        self._inner, self._stats = inner, stats
        stats.open += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.open -= 1
        self._inner.connection_lost(exc)


async def start_site(
    runner: web.AppRunner,
    host: str,
    port: int,
    stats: HttpStats,
    max_connections: int,
    backlog: int = 100,
) -> asyncio.Server:
    """Listen on host:port for `runner` (already set up), with at most `max_connections`
    connections open at once; each one more is answered 503 and closed (`stats.refused`).
    asyncio accepts up to `backlog` connections in one go, so that many descriptors may be
    in use beyond `max_connections` for a moment."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    stats.max_connections = max_connections

    def protocol() -> asyncio.Protocol:
        if stats.open >= max_connections:
            if not stats.refused:
                log.warning("rpc: %d connections open (max_connections): refusing more", stats.open)
            stats.refused += 1
            return _Refuse()
        return _Counted(server(), stats)

    loop = asyncio.get_running_loop()
    return await loop.create_server(protocol, host, port, reuse_address=True, backlog=backlog)
