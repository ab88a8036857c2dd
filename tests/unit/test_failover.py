"""The CLI's fail-over client (node/rpc/failover.py), against real HTTP servers and closed ports."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from node.rpc.client import RpcUnavailable
from node.rpc.failover import FailoverClient
from node.rpc.jsonrpc import Dispatcher, RpcError, make_app


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then closed: refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def node(name: str, calls: list[str], port: int | None = None) -> TestServer:
    """A JSON-RPC server answering `whoami` with `name` and `refuse` with an error."""
    d = Dispatcher()

    async def whoami(_: dict[str, Any]) -> str:
        calls.append(name)
        return name

    async def refuse(_: dict[str, Any]) -> None:
        calls.append(name)
        raise RpcError(-32010, f"{name} says no")

    d.register("whoami", whoami)
    d.register("refuse", refuse)
    server = TestServer(make_app(d), port=port)
    await server.start_server()
    return server


@pytest.fixture
async def servers() -> AsyncIterator[tuple[list[TestServer], list[str]]]:
    calls: list[str] = []
    started = [await node("n1", calls), await node("n2", calls)]
    yield started, calls
    for s in started:
        await s.close()


def url(server: TestServer) -> str:
    return str(server.make_url("/rpc"))


async def test_a_dead_first_member_is_passed_over_and_the_answer_sticks(
    servers: tuple[list[TestServer], list[str]],
) -> None:
    (n1, n2), calls = servers
    members = [("n0", closed_port_url()), ("n1", url(n1)), ("n2", url(n2))]
    async with FailoverClient(members, timeout=5) as client:
        assert await client.call("whoami") == "n1"
        assert client.answered_by == "n1"
        await n1.close()  # n1 dies: the next call moves on to n2, and stays there
        assert await client.call("whoami") == "n2"
        assert await client.call("whoami") == "n2"
    assert calls == ["n1", "n2", "n2"]


async def test_a_member_that_comes_back_does_not_take_over_from_the_one_answering(
    servers: tuple[list[TestServer], list[str]],
) -> None:
    (n1, _), calls = servers
    dead = closed_port_url()
    async with FailoverClient([("n0", dead), ("n1", url(n1))], timeout=5) as client:
        assert await client.call("whoami") == "n1"
        n0 = await node("n0", calls, port=int(dead.rsplit(":", 1)[1]))
        try:
            assert await client.call("whoami") == "n1"  # a nonce read and its submit: one node
        finally:
            await n0.close()
    assert calls == ["n1", "n1"]


async def test_an_rpc_error_is_an_answer_not_a_reason_to_move_on(
    servers: tuple[list[TestServer], list[str]],
) -> None:
    (n1, n2), calls = servers
    async with FailoverClient([("n1", url(n1)), ("n2", url(n2))], timeout=5) as client:
        with pytest.raises(RpcError, match="n1 says no"):
            await client.call("refuse")
    assert calls == ["n1"]  # n2 was never asked: the call is not repeated elsewhere


async def test_when_no_member_answers_the_error_names_every_node_tried() -> None:
    members = [("n0", closed_port_url()), ("n1", closed_port_url())]
    async with FailoverClient(members, timeout=5) as client:
        with pytest.raises(RpcUnavailable) as info:
            await client.call("whoami")
    message = str(info.value)
    assert message.startswith("no node answered (tried n0: cannot reach node at")
    assert "; n1: cannot reach node at" in message
    assert members[0][1] in message and members[1][1] in message


async def test_a_batch_goes_whole_to_one_member(
    servers: tuple[list[TestServer], list[str]],
) -> None:
    (n1, _), calls = servers
    async with FailoverClient([("n0", closed_port_url()), ("n1", url(n1))]) as client:
        answers = await client.batch([("whoami", {}), ("whoami", {})])
    assert answers == ["n1", "n1"] and calls == ["n1", "n1"]


def test_no_members_is_a_mistake_of_the_caller() -> None:
    with pytest.raises(ValueError):
        FailoverClient([])
