"""Admin JSON-RPC methods: live fault injection.  They need the admin token that
`tally up` writes into the data dir (HTTP header `Authorization: Bearer <token>`)."""

from __future__ import annotations

from typing import Any

from node.faults.spec import FaultError, FaultSpec
from node.process.runtime import NodeRuntime
from node.rpc.jsonrpc import INVALID_PARAMS, Dispatcher, RpcError, param


def register(dispatcher: Dispatcher, node: NodeRuntime) -> None:
    faults = node.faults

    async def fault_inject(params: dict[str, Any]) -> dict[str, Any]:
        """params: kind, optional node, params (object), duration_seconds, at_seconds
        (from now), at_height."""
        raw = dict(params)
        if raw.get("at_seconds") is not None:
            raw["at_seconds"] = node.uptime_s() + _seconds(raw["at_seconds"])
        try:
            spec = faults.inject(FaultSpec.from_dict(raw), node.uptime_s(), node.store.height)
        except FaultError as e:
            raise RpcError(INVALID_PARAMS, str(e)) from None
        answer = spec.to_dict() | {"state": "active" if spec.id in faults.active else "pending"}
        node.hub.notice({"type": "fault_injected", "fault": answer})
        return answer

    async def fault_heal(params: dict[str, Any]) -> dict[str, Any]:
        fault_id = param(params, "id", str, required=False)
        try:
            healed = faults.heal(fault_id)
        except FaultError as e:
            raise RpcError(INVALID_PARAMS, str(e)) from None
        if healed:
            node.hub.notice({"type": "fault_healed", "ids": healed})
        return {"healed": healed}

    async def fault_list(params: dict[str, Any]) -> dict[str, Any]:
        return {
            "node_id": node.node_id,
            "faults": faults.listing(),
            "network": dict(faults.network.counts),
        }

    for name, fn, params in [
        ("fault_inject", fault_inject, None),  # FaultSpec.from_dict refuses unknown names
        ("fault_heal", fault_heal, ("id",)),
        ("fault_list", fault_list, ()),
    ]:
        dispatcher.register(name, fn, admin=True, params=params)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RpcError(INVALID_PARAMS, "at_seconds must be a non-negative number")
    return float(value)
