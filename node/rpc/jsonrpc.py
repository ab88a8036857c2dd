"""Generic JSON-RPC 2.0 over HTTP (server side).

The layer knows nothing about the ledger: the node builds a `Dispatcher`, registers its methods
on it and serves it with `make_app`. Only by-name params (a JSON object) are supported.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, overload

from aiohttp import web

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "UNAUTHORIZED",
    "Dispatcher",
    "Method",
    "RpcError",
    "make_app",
    "param",
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

    def __init__(self, *, admin_token: str | None = None) -> None:
        if admin_token == "":
            raise ValueError("admin_token must be non-empty (or None to disable admin methods)")
        self._admin_token = admin_token
        self._methods: dict[str, _Entry] = {}
        self.errors: Counter[int] = Counter()

    def register(self, name: str, fn: Method, *, admin: bool = False) -> None:
        if not name or name.startswith("rpc."):  # "rpc." is reserved by the JSON-RPC spec
            raise ValueError(f"invalid method name: {name!r}")
        if name in self._methods:
            raise ValueError(f"method already registered: {name!r}")
        self._methods[name] = _Entry(fn, admin)

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
        try:
            return await entry.fn(call.params if call.params is not None else {})
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


def _loads(body: bytes) -> Any:
    # Decode explicitly: json.loads(bytes) would silently accept UTF-16/32 as well.
    return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# --- HTTP ---------------------------------------------------------------------------------------


def make_app(dispatcher: Dispatcher, *, max_body: int = 8 << 20) -> web.Application:
    """`POST /rpc` serves the dispatcher; `GET /health` answers `{"ok": true}`."""

    async def rpc(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_body:
            return _too_large(dispatcher)
        try:
            body = await request.read()  # enforces client_max_size for chunked bodies too
        except web.HTTPRequestEntityTooLarge:
            return _too_large(dispatcher)
        answer = await dispatcher.handle(body, request.headers)
        if answer is None:
            return web.Response(status=204)
        return web.Response(body=answer, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/rpc", rpc)
    app.router.add_get("/health", health)
    return app


def _too_large(dispatcher: Dispatcher) -> web.Response:
    body = dispatcher.reject(RpcError(INVALID_REQUEST, "request too large"))
    return web.Response(status=413, body=body, content_type="application/json")
