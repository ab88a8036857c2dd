"""Async JSON-RPC 2.0 client for a Tally node, plus `call_sync` for simple CLI use."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp
from yarl import URL

from node.rpc.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, RpcError

__all__ = ["SUBMIT_BATCH", "RpcClient", "RpcError", "RpcUnavailable", "call_sync"]

# txs per submit_txs call by default: a PBFT batch's worth (batch_size_max), well below the
# node's max_batch, so one call's checks do not hold the node's event loop for long
SUBMIT_BATCH = 500


class RpcUnavailable(ConnectionError):
    """The node could not be reached, timed out, or did not answer with JSON-RPC."""


class Closing:
    """`async with client:` closes it at the end (for any client with `close`)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        raise NotImplementedError


class RpcClient(Closing):
    """One keep-alive HTTP session to one node endpoint.

    `url` is the JSON-RPC endpoint; a bare `http://host:port` gets the default `/rpc` path.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, token: str | None = None) -> None:
        parsed = URL(url)
        self.url = str(parsed.with_path("/rpc") if parsed.path in ("", "/") else parsed)
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ids = itertools.count(1)
        # the most calls the node takes in one batch, once it has said so (-32600, max_batch)
        self.max_batch: int | None = None
        # Created lazily: an aiohttp session must be created inside the running event loop.
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, /, **params: Any) -> Any:
        """Call `method` with by-name params; raise RpcError if the node answers with an error."""
        request = {"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._ids)}
        response = await self._post(request)
        if not isinstance(response, dict) or not ("result" in response or "error" in response):
            raise RpcUnavailable(f"malformed JSON-RPC response from {self.url}: {response!r}")
        if "error" in response:
            raise RpcError.from_json(response["error"])
        return response["result"]

    async def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any | RpcError]:
        """Send `calls` as one batch; results come back in call order, errors as RpcError values.

        A node that takes fewer calls per batch says how many (`data.max_batch`); the calls
        are then sent in that many batches, one after the other, in order.  Raises RpcError
        only if the node rejects a batch as a whole for another reason.
        """
        if not calls:
            return []  # the protocol has no empty batch; the server would answer -32600
        results: list[Any | RpcError] = []
        while len(results) < len(calls):
            size = self.max_batch or len(calls)
            chunk = calls[len(results) : len(results) + size]
            try:
                results += await self._batch(chunk)
            except RpcError as e:
                if not self._learn_max_batch(e, len(chunk), INVALID_REQUEST):
                    raise
        return results

    async def submit_txs(
        self, txs: Sequence[bytes | str], *, size: int = SUBMIT_BATCH
    ) -> list[dict[str, Any] | RpcError]:
        """Submit signed txs (encodings, or their hex) with `submit_txs`, `size` per call, in
        order.  Each answer is submit_tx's: a dict (`{tx_id, status: "pending"}`, or `{tx_id,
        height, status}` if already committed), or the RpcError it would have raised."""
        hexes = [t if isinstance(t, str) else t.hex() for t in txs]
        results: list[dict[str, Any] | RpcError] = []
        while len(results) < len(hexes):
            chunk = hexes[len(results) : len(results) + min(size, self.max_batch or size)]
            try:
                answers = await self.call("submit_txs", txs=chunk)
            except RpcError as e:
                if not self._learn_max_batch(e, len(chunk), INVALID_PARAMS):
                    raise
                continue
            if not isinstance(answers, list) or len(answers) != len(chunk):
                raise RpcUnavailable(f"malformed submit_txs answer from {self.url}")
            results += [_submitted(a) for a in answers]
        return results

    def _learn_max_batch(self, error: RpcError, sent: int, code: int) -> bool:
        """Whether `error` refused `sent` items for being more than the node takes at once
        (it then says how many: `data.max_batch`); if so, send that many from now on."""
        limit = error.data.get("max_batch") if isinstance(error.data, dict) else None
        if error.code != code or not isinstance(limit, int) or not 0 < limit < sent:
            return False
        self.max_batch = limit
        return True

    async def _batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any | RpcError]:
        ids = [next(self._ids) for _ in calls]
        requests = [
            {"jsonrpc": "2.0", "method": method, "params": params, "id": id_}
            for id_, (method, params) in zip(ids, calls, strict=True)
        ]
        response = await self._post(requests)
        if isinstance(response, dict) and "error" in response:
            raise RpcError.from_json(response["error"])
        if not isinstance(response, list):
            raise RpcUnavailable(f"malformed JSON-RPC batch response from {self.url}")
        by_id = {
            r["id"]: r for r in response if isinstance(r, dict) and isinstance(r.get("id"), int)
        }
        return [_outcome(by_id.get(id_)) for id_ in ids]

    async def _post(self, payload: Any) -> Any:
        session = self._get_session()
        try:
            async with session.post(self.url, data=json.dumps(payload)) as resp:
                body = await resp.read()
                status, reason = resp.status, resp.reason
        except TimeoutError as exc:
            raise RpcUnavailable(f"node at {self.url} timed out after {self._timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise RpcUnavailable(f"cannot reach node at {self.url}: {exc}") from exc
        try:
            return json.loads(body)
        except ValueError:
            # 413 and other JSON-RPC errors carry a JSON body; anything else is not our node.
            raise RpcUnavailable(
                f"node at {self.url} answered HTTP {status} {reason} without a JSON-RPC body"
            ) from None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        return self._session


def _submitted(answer: Any) -> dict[str, Any] | RpcError:
    if isinstance(answer, dict) and answer.get("status") == "refused":
        return RpcError.from_json(answer.get("error"))
    if not isinstance(answer, dict):
        return RpcError(INTERNAL_ERROR, f"malformed submit_txs answer: {answer!r}")
    return answer


def _outcome(response: Any) -> Any:
    if response is None:
        return RpcError(INTERNAL_ERROR, "no response for this call in the batch")
    if "error" in response:
        return RpcError.from_json(response["error"])
    return response.get("result")


def call_sync(
    url: str, method: str, /, token: str | None = None, timeout: float = 10.0, **params: Any
) -> Any:
    """Blocking one-shot call for CLI use; must not be called from inside an event loop.

    Params named `token` or `timeout` cannot be passed this way; use RpcClient.call for those.
    """

    async def run() -> Any:
        async with RpcClient(url, timeout=timeout, token=token) as client:
            return await client.call(method, **params)

    return asyncio.run(run())
