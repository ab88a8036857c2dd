"""A live node's RPC server under abuse (issue 15 findings 3 to 6): a cap on open connections
(503 beyond it), idle connections closed, aborted requests counted without tracebacks, the fd
limit in `status`, and strict JSON-RPC (undeclared params, batch size, oversized ids)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from node.rpc.jsonrpc import INVALID_PARAMS, INVALID_REQUEST, RpcError
from tests.helpers.livecluster import live_cluster, node_status, wait_for_status
from tests.helpers.wait import wait_for

CAP = 20
MAX_BATCH = 50
RPC_TOML = f"""
[rpc]
max_connections = {CAP}
idle_timeout_s = 1.0
max_batch = {MAX_BATCH}
"""
NODE = "n0"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("rpclimits")
    with live_cluster(directory, "rpclimits", {"alice": 1000}, {}, RPC_TOML) as cfg:
        yield cfg


def where(cfg: ClusterConfig) -> tuple[str, int]:
    spec = cfg.node(NODE)
    return spec.host, spec.rpc_port


async def status(cfg: ClusterConfig) -> dict[str, Any]:
    answer = await wait_for(lambda: node_status(cfg, NODE), f"status of {NODE}")
    assert isinstance(answer, dict)
    return answer


async def post(cfg: ClusterConfig, body: bytes) -> Any:
    host, port = where(cfg)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{host}:{port}/rpc", data=body) as response,
    ):
        return json.loads(await response.read())


async def test_status_reports_the_fd_limit_and_the_rpc_connections(cluster: ClusterConfig) -> None:
    s = await status(cluster)
    assert s["fds"]["limit"] is None or s["fds"]["limit"] > CAP
    assert s["fds"]["open"] is None or s["fds"]["open"] > 0
    assert s["rpc"]["max_connections"] == CAP
    assert s["rpc"]["connections_open"] >= 1  # this one
    assert {"refused", "aborted", "timed_out"} <= set(s["rpc"])


async def test_connections_beyond_the_cap_get_503_and_status_answers_after(
    cluster: ClusterConfig,
) -> None:
    host, port = where(cluster)
    count = 3 * CAP
    conns = [await asyncio.open_connection(host, port) for _ in range(count)]
    # each gets either a 503 at once, or nothing until the idle timeout closes it
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 60) for r, _ in conns))
    busy = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
    assert len(busy) >= count - CAP
    assert all(a == b"" for a in answers if a not in busy)  # the held ones: closed when idle
    assert b"too many connections" in busy[0]
    for _, writer in conns:
        writer.close()
    s = await wait_for_status(cluster, NODE, lambda s: s["rpc"]["refused"] >= 2 * CAP, "refusals")
    assert s["rpc"]["connections_open"] <= CAP


async def test_idle_connections_are_closed_after_the_idle_timeout(cluster: ClusterConfig) -> None:
    host, port = where(cluster)
    silent = [await asyncio.open_connection(host, port) for _ in range(CAP // 2)]
    half = await asyncio.open_connection(host, port)
    half[1].write(b"POST /rpc HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    for reader, _ in [*silent, half]:
        assert await asyncio.wait_for(reader.read(), 60) == b""  # the server closed it
    for _, writer in [*silent, half]:
        writer.close()
    await wait_for_status(cluster, NODE, lambda s: s["rpc"]["connections_open"] <= 2, "closes")


async def test_requests_aborted_mid_body_are_counted_without_a_traceback(
    cluster: ClusterConfig,
) -> None:
    host, port = where(cluster)
    before = (await status(cluster))["errors"].get("rpc_aborted", 0)
    aborts = 30
    for _ in range(aborts):
        _, writer = await asyncio.open_connection(host, port)
        head = "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        writer.write(head.encode() + b'{"jsonrpc": "2.0", "meth')
        await writer.drain()
        await asyncio.sleep(0.02)  # let the server start reading the body
        writer.close()
    await wait_for_status(
        cluster,
        NODE,
        lambda s: s["errors"].get("rpc_aborted", 0) >= before + aborts,
        "aborted requests counted",
    )
    log = cluster.log_path(NODE).read_text()
    assert "Traceback" not in log
    assert " ERROR aiohttp" not in log


async def test_undeclared_params_are_refused_by_name(cluster: ClusterConfig) -> None:
    async with RpcClient(cluster.node(NODE).rpc_url) as client:
        for method, params, name in [
            ("status", {"bogus": 1}, "bogus"),
            ("get_block", {"height": 1, "zzz": 2}, "zzz"),
        ]:
            with pytest.raises(RpcError) as info:
                await client.call(method, **params)
            assert info.value.code == INVALID_PARAMS and repr(name) in info.value.message
        assert (await client.call("get_block", height=0, txs="ids"))["height"] == 0


async def test_a_batch_above_max_batch_and_a_huge_id_are_invalid_requests(
    cluster: ClusterConfig,
) -> None:
    call = {"jsonrpc": "2.0", "method": "status", "id": 1}
    answer = await post(cluster, json.dumps([call] * (MAX_BATCH + 1)).encode())
    assert isinstance(answer, dict) and answer["error"]["code"] == INVALID_REQUEST
    assert f"at most {MAX_BATCH}" in answer["error"]["message"]
    assert len(await post(cluster, json.dumps([call] * MAX_BATCH).encode())) == MAX_BATCH
    huge = b'{"jsonrpc": "2.0", "method": "status", "id": ' + b"7" * 5000 + b"}"
    answer = await post(cluster, huge)
    assert answer["error"]["code"] == INVALID_REQUEST and answer["id"] is None
