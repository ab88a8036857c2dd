"""JSON views of ledger objects for RPC answers and the CLI (bytes shown as hex)."""

from __future__ import annotations

from typing import Any

from consensus.pbft.messages import CommitCertificate
from consensus.pow.seal import PowSeal
from contracts.design.exchange import STATES
from contracts.exchange import WINDOWS, Exchange
from contracts.kernel.engine import PHASES, KernelEngine, Sealed
from contracts.risk_sharing import engine as risk
from contracts.risk_sharing.schedule import schedule_args
from ledger.block import Block, BlockHeader, Member
from ledger.contract import ContractRecord
from ledger.encoding import DecodeError, Tag, decode_any, unpack
from ledger.index import ContractEntry
from ledger.state import Account, Receipt
from ledger.tx import Tx
from node.engines import chain_engines


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def tx_view(tx: Tx, status: str) -> dict[str, Any]:
    return {
        "tx_id": tx.tx_id.hex(),
        "sender": tx.sender_address.hex(),
        "nonce": tx.nonce,
        "kind": tx.kind,
        "payload": jsonable(tx.payload),
        "status": status,
    }


def block_view(
    block: Block, receipts: tuple[Receipt, ...], members: tuple[Member, ...]
) -> dict[str, Any]:
    h = block.header
    view: dict[str, Any] = {
        "height": h.height,
        "hash": block.hash.hex(),
        "parent": h.parent.hex(),
        "timestamp_ms": h.timestamp_ms,
        "proposer": h.proposer,
        "proposed_ms": h.proposed_ms,
        "tx_root": h.tx_root.hex(),
        "receipts_root": h.receipts_root.hex(),
        "state_root": h.state_root.hex(),
        "txs": [tx_view(tx, r.reason) for tx, r in zip(block.txs, receipts, strict=True)],
        "raw": block.encode().hex(),
    }
    return view | proof_view(block.proof, members)


def proof_view(proof: bytes, members: tuple[Member, ...]) -> dict[str, Any]:
    """What makes a block final: a PBFT commit certificate (who signed it), or a PoW seal."""
    if proof and proof[0] == Tag.POW_SEAL:
        seal = PowSeal.decode(proof)
        return {
            "certificate": None,
            "pow": {"bits": f"{seal.bits:#010x}", "nonce": seal.nonce.hex()},
        }
    if not proof:
        return {"certificate": None}
    try:
        cert = CommitCertificate.decode(proof)
    except DecodeError:
        return {"certificate": {"error": "unreadable"}}
    signers = [members[c.replica].node_id for c in cert.commits if c.replica < len(members)]
    return {"certificate": {"view": cert.view, "signers": signers}}


def block_summary(
    header: BlockHeader, proof: bytes, n_txs: int, members: tuple[Member, ...]
) -> dict[str, Any]:
    """A block without its txs: a `blocks` subscription's event, and a get_blocks row."""
    return {
        "type": "block",
        "height": header.height,
        "hash": header.sha256().hex(),
        "parent": header.parent.hex(),
        "timestamp_ms": header.timestamp_ms,
        "proposer": header.proposer,
        "txs": n_txs,
        "certificate": proof_view(proof, members)["certificate"],
    }


def contract_entry_view(e: ContractEntry) -> dict[str, Any]:
    """A row of the contract listing (list_contracts); get_contract has the whole contract."""
    return {
        "id": e.contract_id.hex(),
        "engine": e.engine,
        "phase": e.phase,
        "active": e.active,
        "deadline": e.deadline,
        "parties": [p.hex() for p in e.parties],
        "created_height": e.created_height,
        "escrow": e.escrow,
    }


def account_view(account: Account, next_nonce: int) -> dict[str, Any]:
    return {
        "address": account.address.hex(),
        "balance": account.balance,
        "nonce": account.nonce,
        "next_nonce": next_nonce,
    }


def describe_vote(raw: bytes) -> dict[str, Any]:
    """A signed vote carried as evidence, readable (its raw bytes prove it)."""
    try:
        vote = decode_any(raw)
    except DecodeError:
        return {"error": "unreadable", "raw": raw.hex()}
    fields: dict[str, Any] = jsonable(
        {k: getattr(vote, k, None) for k in ("view", "seq", "digest", "replica")}
    )
    return {"kind": type(vote).__name__, **fields, "raw": raw.hex()}


def contract_view(record: ContractRecord, height: int) -> dict[str, Any]:
    """A contract of any engine: its terms, where it stands, and its whole history."""
    if record.engine == risk.NAME:
        return risk_view(record, height)
    engine = chain_engines().get(record.engine)
    if isinstance(engine, KernelEngine):
        return sealed_view(record, engine, height)
    return exchange_view(record, height)


def sealed_view(record: ContractRecord, engine: KernelEngine, height: int) -> dict[str, Any]:
    """A kernel mechanism: its terms, phase and deadline, each party's deposit and what
    committing needs, whether it committed (the commitment only: its message stays sealed
    until revealed), what it revealed, and once settled the outcome and every payment."""
    s = Sealed.decode(record.data)
    parties = [
        {
            "address": address.hex(),
            "deposit": s.deposits[i],
            "required": s.penalty + engine.rule.min_deposit(s.terms, i),
            "committed": bool(s.commitments[i]),
            "commitment": s.commitments[i].hex() or None,
            "revealed": bool(s.messages[i]),
            "message": jsonable(unpack(s.messages[i])) if s.messages[i] else None,
        }
        for i, address in enumerate(s.parties)
    ]
    return {
        "id": record.contract_id.hex(),
        "engine": record.engine,
        "active": record.active,
        "escrow": record.escrow,
        "creator": s.creator.hex(),
        "terms": jsonable(s.terms),
        "penalty": s.penalty,
        "windows": dict(zip(PHASES, s.windows, strict=True)),
        "phase": s.phase,
        "deadline": s.deadline if record.active else None,
        "height": height,
        "parties": parties,
        "outcome": jsonable(s.outcome),
        "history": [
            {
                "height": e.height,
                "kind": e.kind,
                "party": e.party,
                "tx_id": e.tx_id.hex() or None,
                "amount": e.amount,
            }
            for e in s.history
        ],
    }


def exchange_view(record: ContractRecord, height: int) -> dict[str, Any]:
    """An exchange contract: parties, terms, the table, where it stands, and every move."""
    ex = Exchange.decode(record.data)
    rows = [
        dict(zip(("seller", "buyer", "burn"), ex.row(s), strict=True)) | {"state": s}
        for s in STATES
    ]
    return {
        "id": record.contract_id.hex(),
        "engine": record.engine,
        "active": record.active,
        "escrow": record.escrow,
        "seller": ex.seller.hex(),
        "buyer": ex.buyer.hex(),
        "offered_by": ex.offered_by,
        "item": ex.item,
        "price": ex.price,
        "deposits": {"seller": ex.deposit_seller, "buyer": ex.deposit_buyer},
        "table": rows,
        "windows": dict(zip(WINDOWS, ex.windows, strict=True)),
        "stage": ex.stage,
        "deadline": ex.deadline if ex.stage not in ("settled", "cancelled") else None,
        "height": height,
        "moves": {"redeem": ex.redeemed, "complain": ex.complained, "admit_fault": ex.admitted},
        "final_state": ex.final_state() if ex.stage == "settled" else None,
        "history": [
            {"height": m.height, "op": m.op, "by": m.by, "tx_id": m.tx_id.hex() or None}
            for m in ex.history
        ],
    }


def risk_view(record: ContractRecord, height: int) -> dict[str, Any]:
    """A risk-sharing contract: parties, schedule, collateral, the period under way, and the
    history of commitments, reports, reveals, draws, audits and payments."""
    rs = risk.RiskSharing.decode(record.data)
    incomes = rs.schedule.incomes
    return {
        "id": record.contract_id.hex(),
        "engine": record.engine,
        "active": record.active,
        "escrow": record.escrow,
        "agent1": rs.agent1.hex(),
        "agent2": rs.agent2.hex(),
        "auditor": rs.auditor.hex(),
        "schedule": schedule_args(rs.schedule),
        "periods": rs.periods,
        "windows": dict(zip(risk.WINDOWS, rs.windows, strict=True)),
        "penalty": rs.penalty,
        "audit_fee": rs.audit_fee,
        "required_collateral": {r: rs.required(r) for r in risk.ROLES},
        # what walking away (a missed commitment or report) would cost now
        "forfeit": {r: rs.forfeit(r, max(rs.period, 1)) for r in risk.ROLES},
        "collateral": dict(zip(risk.ROLES, rs.collateral, strict=True)),
        "period": rs.period,
        "stage": rs.stage,
        "deadline": rs.deadline if record.active else None,
        "height": height,
        "reports": [incomes[i] for i in rs.reports],
        "committed": dict(zip(risk.ROLES, (bool(c) for c in rs.commitments), strict=True)),
        "revealed": dict(zip(risk.ROLES, (bool(s) for s in rs.secrets), strict=True)),
        "history": [_risk_event(e, incomes) for e in rs.history],
    }


def _risk_event(e: risk.RiskEvent, incomes: tuple[int, ...]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "height": e.height,
        "period": e.period,
        "kind": e.kind,
        "by": e.by,
        "tx_id": e.tx_id.hex() or None,
    }
    if e.kind in ("report", "audit"):
        view["income"] = incomes[e.amount]
    elif e.kind == "draw":
        view |= {"u": e.amount, "outcome": e.note}
    elif e.kind == "transfer":
        view |= {"transfer": e.amount, "paid_from": e.note}
    elif e.kind in ("deposit", "penalty", "fee", "refund"):
        view["amount"] = e.amount
        if e.note:
            view["paid_from"] = e.note
    elif e.kind in ("commit", "reveal"):
        view["commitment" if e.kind == "commit" else "secret"] = e.data.hex()
    elif e.note:
        view["note"] = e.note
    return view
