"""A small contract engine for ledger tests: a phase, parties, and a deadline that closes it.

`create {phase, parties, window_s?}` opens a contract; `move {phase}` changes its phase;
`close` ends it.  With `window_s`, the contract expires by itself once ledger time passes
`window_s` seconds after its creation: a change that no tx of its block names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.contract import Context, ContractError, ContractRecord, ContractSummary, Effect
from ledger.crypto import KeyPair
from ledger.encoding import pack, unpack
from ledger.tx import CONTRACT, Tx

NAME = "toy"


class ToyEngine:
    name = NAME

    def apply(
        self, record: ContractRecord | None, op: str, args: Mapping[str, Any], ctx: Context
    ) -> Effect:
        if record is None:
            if op != "create":
                raise ContractError("bad_op", "create first")
            due = ctx.due(args["window_s"]) if "window_s" in args else None
            return self._effect(args["phase"], tuple(args["parties"]), due, True)
        data = unpack(record.data)
        if op == "move":
            return self._effect(args["phase"], data["parties"], data["due"], True)
        if op == "close":
            return self._effect("closed", data["parties"], None, False)
        raise ContractError("bad_op", f"no op {op!r}")

    def deadline(self, record: ContractRecord) -> int | None:
        due: int | None = unpack(record.data)["due"]
        return due

    def on_deadline(self, record: ContractRecord, ctx: Context) -> Effect:
        return self._effect("expired", unpack(record.data)["parties"], None, False)

    def describe(self, record: ContractRecord) -> ContractSummary:
        data = unpack(record.data)
        return ContractSummary(data["phase"], tuple(data["parties"]))

    @staticmethod
    def _effect(phase: str, parties: tuple[bytes, ...], due: int | None, active: bool) -> Effect:
        return Effect(pack({"phase": phase, "parties": list(parties), "due": due}), active)


def toy_call(
    key: KeyPair, chain_id: str, nonce: int, op: str, cid: bytes, args: dict[str, Any]
) -> Tx:
    payload = {"engine": NAME, "op": op, "id": cid, "args": args}
    return Tx.create(key, chain_id, nonce, CONTRACT, payload)
