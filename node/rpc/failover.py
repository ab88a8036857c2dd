"""A JSON-RPC client over several nodes of one cluster: each call goes to the first that answers.

The CLI talks to a cluster, not to one node: with its default node killed, a transfer, a
query or a contract call is answered by another member.  Calls stick to the node that last
answered (a nonce read and the submit that uses it go to the same node while it lives) and
move on, in the members' order, when it stops answering.  Only an unreachable node is
passed over: an RPC error is that node's answer, and is raised as it is.

Moving on repeats the call on the next node, which is safe for what the CLI sends: reads,
and `submit_tx` of one signed tx (a tx a node already has is answered pending, or with its
height once committed), so `wait: "commit"` follows the commit on whichever node answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from node.rpc.client import Closing, RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError

Members = Sequence[tuple[str, str]]  # (node id, RPC URL), in the order they are tried
T = TypeVar("T")


class FailoverClient(Closing):
    def __init__(
        self, members: Members, *, timeout: float = 10.0, token: str | None = None
    ) -> None:
        if not members:
            raise ValueError("a FailoverClient needs at least one node")
        self._clients = [
            (node_id, RpcClient(url, timeout=timeout, token=token)) for node_id, url in members
        ]
        self._first = 0  # the member that answered last: tried first
        self.answered_by: str | None = None

    async def close(self) -> None:
        for _, client in self._clients:
            await client.close()

    async def call(self, method: str, /, **params: Any) -> Any:
        """`RpcClient.call` on the first member that answers."""
        return await self._first_answer(lambda c: c.call(method, **params))

    async def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any | RpcError]:
        """`RpcClient.batch` on the first member that answers (all calls to the same one)."""
        return await self._first_answer(lambda c: c.batch(calls))

    async def _first_answer(self, do: Callable[[RpcClient], Awaitable[T]]) -> T:
        tried = []
        count = len(self._clients)
        for k in range(count):
            i = (self._first + k) % count
            node_id, client = self._clients[i]
            try:
                result = await do(client)
            except RpcUnavailable as e:
                tried.append(f"{node_id}: {e}")
                continue
            self._first, self.answered_by = i, node_id
            return result
        raise RpcUnavailable(f"no node answered (tried {'; '.join(tried)})")
