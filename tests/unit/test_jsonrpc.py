"""Tests for the generic JSON-RPC 2.0 layer (node/rpc/jsonrpc.py and node/rpc/client.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.process import limits
from node.rpc import jsonrpc
from node.rpc.client import RpcClient, RpcUnavailable, call_sync
from node.rpc.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNAUTHORIZED,
    Dispatcher,
    RpcError,
    make_app,
    param,
)
from tests.helpers.wait import wait_for

TOKEN = "s3cret-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def build_dispatcher(admin_token: str | None = TOKEN) -> tuple[Dispatcher, list[Any]]:
    """A dispatcher with test methods, and the list that the `record` method appends to."""
    d = Dispatcher(admin_token=admin_token)
    seen: list[Any] = []

    async def add(p: dict[str, Any]) -> int:
        return param(p, "a", int) + param(p, "b", int)

    async def greet(p: dict[str, Any]) -> str:
        name = param(p, "name", str)
        greeting = param(p, "greeting", str, required=False, default="hello")
        return f"{greeting} {name}"

    async def echo(p: dict[str, Any]) -> dict[str, Any]:
        return p

    async def record(p: dict[str, Any]) -> None:
        seen.append(p.get("x"))

    async def fail(p: dict[str, Any]) -> None:
        raise RpcError(-32010, "nope", {"why": "because"})

    async def boom(p: dict[str, Any]) -> None:
        raise RuntimeError("kaboom")

    async def unserialisable(p: dict[str, Any]) -> object:
        return object()

    async def ping(p: dict[str, Any]) -> str:
        return "pong"

    for name, fn in [
        ("add", add),
        ("greet", greet),
        ("echo", echo),
        ("record", record),
        ("fail", fail),
        ("boom", boom),
        ("unserialisable", unserialisable),
    ]:
        d.register(name, fn)
    d.register("admin.ping", ping, admin=True)
    return d, seen


def req(method: str, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    r: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id_}
    if params is not None:
        r["params"] = params
    return r


def note(method: str, params: Any = None) -> dict[str, Any]:
    r = req(method, params)
    del r["id"]
    return r


async def ask(d: Dispatcher, payload: Any, headers: dict[str, str] | None = None) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = await d.handle(raw, headers or {})
    return None if answer is None else json.loads(answer)


def error_code(response: dict[str, Any]) -> int:
    code = response["error"]["code"]
    assert isinstance(code, int)
    return code


@pytest.fixture
def dispatcher() -> Dispatcher:
    return build_dispatcher()[0]


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    srv = TestServer(make_app(build_dispatcher()[0], max_body=1024))
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = TestClient(server)
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def rpc(server: TestServer) -> AsyncIterator[RpcClient]:
    async with RpcClient(str(server.make_url("/rpc")), token=TOKEN) as client:
        yield client


# --- param() -----------------------------------------------------------------------------------


def test_param_accepts_matching_types() -> None:
    p = {"n": 3, "s": "x", "f": 2, "b": True, "d": {}}
    assert param(p, "n", int) == 3
    assert param(p, "s", str) == "x"
    assert param(p, "b", bool) is True
    assert param(p, "d", dict) == {}
    f = param(p, "f", float)
    assert f == 2.0 and isinstance(f, float)


def test_param_optional_uses_default_when_absent_or_null() -> None:
    assert param({}, "n", int, required=False, default=7) == 7
    assert param({"n": None}, "n", int, required=False, default=7) == 7
    assert param({}, "n", int, required=False) is None


@pytest.mark.parametrize(
    ("params", "type_", "message"),
    [
        ({}, int, "missing param 'x': expected int"),
        ({"x": "1"}, int, "invalid param 'x': expected int"),
        ({"x": True}, int, "invalid param 'x': expected int"),
        ({"x": False}, float, "invalid param 'x': expected float"),
        ({"x": None}, str, "invalid param 'x': expected str"),
        ({"x": 1.5}, int, "invalid param 'x': expected int"),
    ],
)
def test_param_rejects_missing_or_wrong_type(params: Any, type_: type, message: str) -> None:
    with pytest.raises(RpcError) as info:
        param(params, "x", type_)
    assert (info.value.code, info.value.message) == (INVALID_PARAMS, message)


# --- Dispatcher: single requests ---------------------------------------------------------------


async def test_success_with_by_name_params(dispatcher: Dispatcher) -> None:
    assert await ask(dispatcher, req("add", {"a": 2, "b": 3}, id_=7)) == {
        "jsonrpc": "2.0",
        "result": 5,
        "id": 7,
    }


async def test_absent_params_reach_the_method_as_empty_object(dispatcher: Dispatcher) -> None:
    assert (await ask(dispatcher, req("echo")))["result"] == {}


async def test_string_and_null_ids_are_echoed(dispatcher: Dispatcher) -> None:
    assert (await ask(dispatcher, req("echo", id_="abc")))["id"] == "abc"
    assert (await ask(dispatcher, req("echo", id_=None)))["id"] is None


async def test_optional_param_default(dispatcher: Dispatcher) -> None:
    assert (await ask(dispatcher, req("greet", {"name": "ann"})))["result"] == "hello ann"
    hi = await ask(dispatcher, req("greet", {"name": "ann", "greeting": "hi"}))
    assert hi["result"] == "hi ann"


async def test_missing_and_invalid_params(dispatcher: Dispatcher) -> None:
    missing = await ask(dispatcher, req("add", {"a": 1}, id_=3))
    assert missing["id"] == 3
    assert missing["error"] == {
        "code": INVALID_PARAMS,
        "message": "missing param 'b': expected int",
    }
    invalid = await ask(dispatcher, req("add", {"a": 1, "b": True}))
    assert invalid["error"]["message"] == "invalid param 'b': expected int"


async def test_positional_params_rejected(dispatcher: Dispatcher) -> None:
    response = await ask(dispatcher, req("add", [1, 2]))
    assert error_code(response) == INVALID_PARAMS
    assert "positional" in response["error"]["message"]


async def test_unknown_method_is_named(dispatcher: Dispatcher) -> None:
    response = await ask(dispatcher, req("nosuch", id_=4))
    assert error_code(response) == METHOD_NOT_FOUND
    assert "nosuch" in response["error"]["message"]
    assert response["id"] == 4


@pytest.mark.parametrize(
    "body",
    [b'{"jsonrpc": "2.0", "method"', b"\xff\xfe{}", b"", b'{"jsonrpc": "2.0", "x": NaN}'],
    ids=["truncated", "not-utf8", "empty", "nan"],
)
async def test_malformed_json_is_parse_error(dispatcher: Dispatcher, body: bytes) -> None:
    response = await ask(dispatcher, body)
    assert response == {
        "jsonrpc": "2.0",
        "error": {"code": PARSE_ERROR, "message": "parse error"},
        "id": None,
    }


@pytest.mark.parametrize(
    "request_",
    [
        1,
        "add",
        None,
        {"method": "add", "id": 1},
        {"jsonrpc": "1.0", "method": "add", "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "method": "echo", "params": 5, "id": 1},
        {"jsonrpc": "2.0", "method": "echo", "params": None, "id": 1},
    ],
    ids=[
        "number",
        "string",
        "null",
        "no-jsonrpc",
        "wrong-version",
        "no-method",
        "method-not-string",
        "params-scalar",
        "params-null",
    ],
)
async def test_invalid_request(dispatcher: Dispatcher, request_: Any) -> None:
    response = await ask(dispatcher, request_)
    assert error_code(response) == INVALID_REQUEST
    assert response["id"] == (1 if isinstance(request_, dict) else None)


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1], True])
async def test_invalid_id_is_invalid_request_with_null_id(
    dispatcher: Dispatcher, bad_id: Any
) -> None:
    response = await ask(dispatcher, req("echo", id_=bad_id))
    assert error_code(response) == INVALID_REQUEST
    assert response["id"] is None


async def test_notification_runs_but_gets_no_response() -> None:
    d, seen = build_dispatcher()
    assert await ask(d, note("record", {"x": 1})) is None
    assert seen == [1]
    # Failing notifications are silent too, but still counted.
    assert await ask(d, note("nosuch")) is None
    assert await ask(d, note("add", {"a": "x"})) is None
    assert d.errors == {METHOD_NOT_FOUND: 1, INVALID_PARAMS: 1}


async def test_method_raising_rpc_error(dispatcher: Dispatcher) -> None:
    response = await ask(dispatcher, req("fail", id_=9))
    assert response == {
        "jsonrpc": "2.0",
        "error": {"code": -32010, "message": "nope", "data": {"why": "because"}},
        "id": 9,
    }


async def test_method_raising_generic_exception(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tally.rpc"):
        response = await ask(dispatcher, req("boom"))
    assert response["error"] == {"code": INTERNAL_ERROR, "message": "internal error"}
    assert "kaboom" not in json.dumps(response)  # details go to the log, not the caller
    [record] = [r for r in caplog.records if r.name == "tally.rpc"]
    assert record.exc_info is not None and "boom" in record.getMessage()
    assert (await ask(dispatcher, req("add", {"a": 1, "b": 1})))["result"] == 2


async def test_unserialisable_result_is_internal_error(dispatcher: Dispatcher) -> None:
    response = await ask(dispatcher, req("unserialisable", id_=5))
    assert error_code(response) == INTERNAL_ERROR
    assert response["id"] == 5


# --- Dispatcher: batches -----------------------------------------------------------------------


async def test_batch_mixed_members() -> None:
    d, seen = build_dispatcher()
    batch = [
        req("add", {"a": 1, "b": 2}, id_=1),
        {"foo": "bar"},
        note("record", {"x": "n"}),
        req("nosuch", id_="two"),
        5,
        req("greet", {"name": "bo"}, id_=3),
        req("add", [1, 2], id_=4),
    ]
    responses = await ask(d, batch)
    assert [r["id"] for r in responses] == [1, None, "two", None, 3, 4]  # request order
    by_id = {r["id"]: r for r in responses if r["id"] is not None}
    assert by_id[1]["result"] == 3
    assert error_code(by_id["two"]) == METHOD_NOT_FOUND
    assert by_id[3]["result"] == "hello bo"
    assert error_code(by_id[4]) == INVALID_PARAMS
    assert [error_code(r) for r in responses if r["id"] is None] == [INVALID_REQUEST] * 2
    assert seen == ["n"]


async def test_empty_batch_is_invalid_request(dispatcher: Dispatcher) -> None:
    response = await ask(dispatcher, [])
    assert isinstance(response, dict)
    assert error_code(response) == INVALID_REQUEST
    assert response["id"] is None


async def test_batch_of_only_notifications_returns_none() -> None:
    d, seen = build_dispatcher()
    assert await ask(d, [note("record", {"x": 1}), note("record", {"x": 2})]) is None
    assert seen == [1, 2]


# --- admin methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        (ADMIN, True),
        ({"authorization": f"bearer {TOKEN}"}, True),
        ({}, False),
        ({"Authorization": "Bearer wrong"}, False),
        ({"Authorization": TOKEN}, False),
        ({"Authorization": f"Basic {TOKEN}"}, False),
        ({"Authorization": "Bearer "}, False),
    ],
    ids=["ok", "case-insensitive", "none", "wrong", "no-scheme", "basic", "empty"],
)
async def test_admin_token(dispatcher: Dispatcher, headers: dict[str, str], ok: bool) -> None:
    response = await ask(dispatcher, req("admin.ping"), headers)
    if ok:
        assert response["result"] == "pong"
    else:
        assert response["error"] == {"code": UNAUTHORIZED, "message": "unauthorized"}


async def test_admin_methods_refused_without_configured_token() -> None:
    d, _ = build_dispatcher(admin_token=None)
    response = await ask(d, req("admin.ping"), {"Authorization": "Bearer "})
    assert error_code(response) == UNAUTHORIZED


async def test_admin_token_does_not_affect_public_methods(dispatcher: Dispatcher) -> None:
    assert (await ask(dispatcher, req("echo"), {"Authorization": "Bearer wrong"}))["result"] == {}


# --- registration and counters -----------------------------------------------------------------


async def test_register_rejects_duplicates_and_reserved_names(dispatcher: Dispatcher) -> None:
    async def fn(p: dict[str, Any]) -> None:
        return None

    for name in ["add", "rpc.discover", ""]:
        with pytest.raises(ValueError):
            dispatcher.register(name, fn)
    with pytest.raises(ValueError):
        Dispatcher(admin_token="")
    assert "admin.ping" in dispatcher.methods


async def test_error_counters(dispatcher: Dispatcher) -> None:
    await ask(dispatcher, b"{")
    await ask(dispatcher, [])
    await ask(dispatcher, req("nosuch"))
    await ask(dispatcher, req("nosuch"))
    await ask(dispatcher, req("add", {}))
    await ask(dispatcher, req("boom"))
    await ask(dispatcher, req("fail"))
    await ask(dispatcher, req("admin.ping"))
    await ask(dispatcher, req("add", {"a": 1, "b": 2}))  # successes are not counted
    assert dispatcher.errors == {
        PARSE_ERROR: 1,
        INVALID_REQUEST: 1,
        METHOD_NOT_FOUND: 2,
        INVALID_PARAMS: 1,
        INTERNAL_ERROR: 1,
        -32010: 1,
        UNAUTHORIZED: 1,
    }


# --- HTTP layer --------------------------------------------------------------------------------


async def test_http_success_is_json(http: TestClient[web.Request, web.Application]) -> None:
    resp = await http.post("/rpc", data=json.dumps(req("add", {"a": 1, "b": 2})))
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert (await resp.json())["result"] == 3


async def test_http_notification_is_204(http: TestClient[web.Request, web.Application]) -> None:
    resp = await http.post("/rpc", data=json.dumps(note("record", {"x": 1})))
    assert resp.status == 204
    assert await resp.read() == b""
    resp = await http.post("/rpc", data=json.dumps([note("record"), note("nosuch")]))
    assert resp.status == 204


async def test_http_parse_error(http: TestClient[web.Request, web.Application]) -> None:
    resp = await http.post("/rpc", data=b"{not json")
    assert resp.content_type == "application/json"
    assert error_code(await resp.json()) == PARSE_ERROR


async def test_http_oversize_body_is_413(http: TestClient[web.Request, web.Application]) -> None:
    big = json.dumps(req("echo", {"pad": "x" * 2048})).encode()
    resp = await http.post("/rpc", data=big)
    assert resp.status == 413
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"] == {"code": INVALID_REQUEST, "message": "request too large"}


async def test_http_oversize_chunked_body_is_413(
    http: TestClient[web.Request, web.Application],
) -> None:
    async def chunks() -> AsyncIterator[
        bytes
    ]:  # no Content-Length, so the limit applies while reading
        for _ in range(4):
            yield b" " * 512

    resp = await http.post("/rpc", data=chunks())
    assert resp.status == 413
    assert error_code(await resp.json()) == INVALID_REQUEST


async def test_http_admin_header(http: TestClient[web.Request, web.Application]) -> None:
    body = json.dumps(req("admin.ping"))
    assert (await (await http.post("/rpc", data=body, headers=ADMIN)).json())["result"] == "pong"
    wrong = await http.post("/rpc", data=body, headers={"Authorization": "Bearer nope"})
    assert error_code(await wrong.json()) == UNAUTHORIZED
    assert error_code(await (await http.post("/rpc", data=body)).json()) == UNAUTHORIZED


async def test_http_server_survives_method_crash(
    http: TestClient[web.Request, web.Application],
) -> None:
    crashed = await http.post("/rpc", data=json.dumps(req("boom")))
    assert crashed.status == 200
    assert error_code(await crashed.json()) == INTERNAL_ERROR
    after = await http.post("/rpc", data=json.dumps(req("add", {"a": 2, "b": 2})))
    assert (await after.json())["result"] == 4


async def test_health(http: TestClient[web.Request, web.Application]) -> None:
    resp = await http.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}


# --- client ------------------------------------------------------------------------------------


async def test_client_call(rpc: RpcClient) -> None:
    assert await rpc.call("add", a=20, b=22) == 42
    assert await rpc.call("admin.ping") == "pong"
    assert await rpc.call("echo", method="m") == {"method": "m"}  # `method` is positional-only


async def test_client_call_raises_server_error(rpc: RpcClient) -> None:
    with pytest.raises(RpcError) as info:
        await rpc.call("fail")
    assert (info.value.code, info.value.message, info.value.data) == (
        -32010,
        "nope",
        {"why": "because"},
    )
    with pytest.raises(RpcError) as info:
        await rpc.call("add", a=1)
    assert info.value.code == INVALID_PARAMS
    with pytest.raises(RpcError) as info:
        await rpc.call("nosuch")
    assert info.value.code == METHOD_NOT_FOUND


async def test_client_without_token_is_unauthorized(server: TestServer) -> None:
    async with RpcClient(str(server.make_url("/rpc"))) as client:
        with pytest.raises(RpcError) as info:
            await client.call("admin.ping")
    assert info.value.code == UNAUTHORIZED


async def test_client_batch(rpc: RpcClient) -> None:
    results = await rpc.batch(
        [("add", {"a": 1, "b": 2}), ("nosuch", {}), ("greet", {"name": "cy"}), ("fail", {})]
    )
    assert results[0] == 3
    assert isinstance(results[1], RpcError) and results[1].code == METHOD_NOT_FOUND
    assert results[2] == "hello cy"
    assert isinstance(results[3], RpcError) and results[3].data == {"why": "because"}
    assert await rpc.batch([]) == []


async def test_client_batch_rejected_as_a_whole_raises(rpc: RpcClient) -> None:
    with pytest.raises(RpcError) as info:
        await rpc.batch([("echo", {"pad": "x" * 2048})])
    assert info.value.code == INVALID_REQUEST


async def test_client_base_url_defaults_to_rpc_path(server: TestServer) -> None:
    async with RpcClient(str(server.make_url("/"))) as client:
        assert client.url.endswith("/rpc")
        assert await client.call("add", a=1, b=1) == 2


async def test_client_non_jsonrpc_endpoint_is_unavailable(server: TestServer) -> None:
    async with RpcClient(str(server.make_url("/nowhere"))) as client:
        with pytest.raises(RpcUnavailable, match="404"):
            await client.call("add", a=1, b=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_client_closed_port_is_refused_not_timed_out() -> None:
    url = f"http://127.0.0.1:{free_port()}/rpc"
    async with RpcClient(url, timeout=5.0) as client:
        # refused at once: "cannot reach", not "timed out after 5.0s"
        with pytest.raises(RpcUnavailable, match="cannot reach"):
            await client.call("add", a=1, b=1)


async def test_client_timeout_is_unavailable() -> None:
    d = Dispatcher()

    async def slow(p: dict[str, Any]) -> None:
        await asyncio.sleep(5)

    d.register("slow", slow)
    async with (
        TestServer(make_app(d)) as srv,
        RpcClient(str(srv.make_url("/rpc")), timeout=0.2) as c,
    ):
        with pytest.raises(RpcUnavailable, match="timed out"):
            await c.call("slow")
        assert isinstance(RpcUnavailable("x"), ConnectionError)


@pytest.fixture
def threaded_url() -> Iterator[str]:
    """A server on its own loop in a thread, so a sync test can call asyncio.run()."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(build_dispatcher()[0]))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://{host}:{port}/rpc"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


def test_call_sync(threaded_url: str) -> None:
    assert call_sync(threaded_url, "add", a=3, b=4) == 7
    assert call_sync(threaded_url, "admin.ping", token=TOKEN) == "pong"
    with pytest.raises(RpcError) as info:
        call_sync(threaded_url, "admin.ping", token="wrong")
    assert info.value.code == UNAUTHORIZED


def test_call_sync_unreachable() -> None:
    with pytest.raises(RpcUnavailable):
        call_sync(f"http://127.0.0.1:{free_port()}", "add", timeout=2.0, a=1, b=1)


# --- declared params, batch cap, oversized numbers (issue 15 finding 6) ------------------------


async def test_a_param_the_method_does_not_declare_is_named_and_refused() -> None:
    d = Dispatcher()
    ran: list[Any] = []

    async def get(p: dict[str, Any]) -> int:
        ran.append(p)
        return param(p, "height", int)

    async def status(p: dict[str, Any]) -> str:
        ran.append(p)
        return "ok"

    d.register("get", get, params=("height", "txs"))
    d.register("status", status, params=())
    assert (await ask(d, req("get", {"height": 1, "txs": "ids"})))["result"] == 1
    bad = await ask(d, req("get", {"height": 1, "zzz": 2}))
    assert error_code(bad) == INVALID_PARAMS and "'zzz'" in bad["error"]["message"]
    assert "height, txs" in bad["error"]["message"]  # and what it does take
    bad = await ask(d, req("status", {"bogus": 1}))
    assert error_code(bad) == INVALID_PARAMS and "'bogus'" in bad["error"]["message"]
    assert len(ran) == 1  # refused before the method ran
    assert d.errors[INVALID_PARAMS] == 2


async def test_a_batch_above_max_batch_is_refused_as_a_whole() -> None:
    d, seen = build_dispatcher()
    d.max_batch = 3
    ok = await ask(d, [note("record", {"x": i}) for i in range(2)] + [req("add", {"a": 1, "b": 2})])
    assert ok == [{"jsonrpc": "2.0", "result": 3, "id": 1}] and seen == [0, 1]
    big = await ask(d, [note("record", {"x": i}) for i in range(4)])
    assert error_code(big) == INVALID_REQUEST and big["id"] is None
    assert "batch too large: 4 calls (at most 3)" in big["error"]["message"]
    assert big["error"]["data"] == {"max_batch": 3} and seen == [0, 1]  # none of it ran
    assert Dispatcher(max_batch=5).max_batch == 5 and Dispatcher().max_batch is None


async def test_an_integer_too_long_to_convert_is_an_invalid_request_not_a_parse_error(
    dispatcher: Dispatcher,
) -> None:
    digits = "9" * 5000
    body = f'{{"jsonrpc": "2.0", "method": "add", "id": {digits}}}'.encode()
    answer = await ask(dispatcher, body)
    assert error_code(answer) == INVALID_REQUEST and answer["id"] is None
    call = f'{{"jsonrpc": "2.0", "method": "add", "params": {{"a": {digits}, "b": 1}}, "id": 7}}'
    answer = await ask(dispatcher, call.encode())
    assert error_code(answer) == INVALID_PARAMS and answer["id"] == 7
    assert "'a'" in answer["error"]["message"]


# --- the HTTP server under abuse (issue 15 findings 3, 4, 5) -----------------------------------


@asynccontextmanager
async def listening(d: Dispatcher, max_connections: int = 100, **runner: Any) -> AsyncIterator[int]:
    """`d` served as the node serves it (AppRunner and start_site); yields the port."""
    app_runner = web.AppRunner(make_app(d), access_log=None, **runner)
    await app_runner.setup()
    listener = await jsonrpc.start_site(app_runner, "127.0.0.1", 0, d.http, max_connections)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await app_runner.cleanup()


async def test_a_client_that_goes_away_mid_body_is_counted_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d, _ = build_dispatcher()
    async with listening(d) as port:
        for _ in range(3):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            writer.write(head.encode() + b'{"jsonrpc"')
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
        await wait_for(lambda: d.http.aborted == 3, "3 aborted requests counted", interval=0.02)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


async def test_connections_beyond_max_connections_get_503_and_are_closed() -> None:
    d, _ = build_dispatcher()
    async with listening(d, max_connections=3) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        refused = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, _writer in refused:
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"too many connections" in answer
        assert d.http.refused == 2 and d.http.open == 3
        for _reader, writer in held + refused:
            writer.close()
        await wait_for(lambda: d.http.open == 0, "the held connections closed", interval=0.02)
        async with RpcClient(f"http://127.0.0.1:{port}/rpc") as client:
            assert await client.call("add", a=1, b=2) == 3  # below the cap again
        assert d.http.view()["max_connections"] == 3


async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() -> None:
    d, _ = build_dispatcher()
    async with listening(d, keepalive_timeout=0.3, lingering_time=0.1) as port:
        silent = await asyncio.open_connection("127.0.0.1", port)
        half = await asyncio.open_connection("127.0.0.1", port)
        half[1].write(b"POST /rpc HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        body = await asyncio.open_connection("127.0.0.1", port)
        body[1].write(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        assert await asyncio.wait_for(silent[0].read(), 30) == b""  # closed by the server
        assert await asyncio.wait_for(half[0].read(), 30) == b""
        status = await asyncio.wait_for(body[0].readline(), 30)  # then it lingers, and closes
        assert status.startswith(b"HTTP/1.1 408 ")
        assert d.http.timed_out == 1
        for _reader, writer in (silent, half, body):
            writer.close()


# --- the node's log: the same line at most N times per interval (issue 15 finding 3) ----------


def flood_logger(burst: int, interval_s: float) -> tuple[logging.Logger, list[str], list[float]]:
    """A logger with one handler that collects messages, behind a RepeatFilter on a fake clock."""
    now = [0.0]
    logger = logging.getLogger(f"test.flood.{burst}.{interval_s}.{id(now)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    repeat = limits.RepeatFilter(handler.handle, burst=burst, interval_s=interval_s)
    repeat.clock = lambda: now[0]
    handler.addFilter(repeat)
    return logger, seen, now


def test_a_repeated_log_line_is_let_through_burst_times_then_summarised() -> None:
    logger, seen, now = flood_logger(burst=3, interval_s=60)
    for i in range(1000):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.exception("socket.accept() out of system resource\nsocket: %d", i)
        logger.info("other line")
    assert seen.count("other line") == 3
    assert len([m for m in seen if m.startswith("socket.accept()")]) == 3
    now[0] = 61.0
    logger.error("socket.accept() out of system resource\nsocket: %d", 1001)
    summary = [m for m in seen if "repeated" in m]
    assert summary == [
        "socket.accept() out of system resource: repeated 997 more times in the last 60 s"
        " (suppressed)"
    ]
    assert seen[-1].startswith("socket.accept()") and "repeated" not in seen[-1]  # a new window


def test_the_repeat_summaries_are_flushed_when_the_flood_stops() -> None:
    logger, seen, now = flood_logger(burst=1, interval_s=10)
    handler = logger.handlers[0]
    repeat = next(f for f in handler.filters if isinstance(f, limits.RepeatFilter))
    for _ in range(5):
        logger.warning("flood")
    repeat.flush()  # the interval is not over: nothing yet
    assert seen == ["flood"] and repeat.suppressed == 4
    now[0] = 10.0
    repeat.flush()
    assert seen == ["flood", "flood: repeated 4 more times in the last 10 s (suppressed)"]
    repeat.flush()
    assert len(seen) == 2


def test_the_fd_limit_is_raised_only_within_the_hard_limit() -> None:
    fds = limits.raise_fd_limit(target=1)  # never lowers it
    assert fds == limits.fd_limits()
    assert fds.soft is None or fds.soft >= 1
    in_use = limits.fds_in_use()
    assert in_use is None or in_use > 2
    assert limits.connection_cap(10_000, limits.FdLimits(1024, 4096)) == 1024 - limits.FD_RESERVE
    assert limits.connection_cap(100, limits.FdLimits(1024, 4096)) == 100
    assert limits.connection_cap(100, limits.FdLimits(None, None)) == 100
    assert limits.connection_cap(100, limits.FdLimits(20, 20)) == 10


async def test_the_client_splits_a_batch_to_the_max_batch_the_node_names() -> None:
    d, _ = build_dispatcher()
    d.max_batch = 4
    async with TestServer(make_app(d)) as srv, RpcClient(str(srv.make_url("/rpc"))) as client:
        calls = [("echo", {"x": i}) for i in range(10)] + [("fail", {})]
        results = await client.batch(calls)
        assert results[:10] == [{"x": i} for i in range(10)]  # in order, across 3 batches
        assert isinstance(results[10], RpcError) and results[10].code == -32010
        assert client.max_batch == 4
        assert d.errors[INVALID_REQUEST] == 1  # learnt once
        assert await client.batch(calls[:6]) == [{"x": i} for i in range(6)]
        assert d.errors[INVALID_REQUEST] == 1
