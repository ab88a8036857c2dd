"""The exchange contract in the ledger's state transition: every ending pays the table exactly,
money is conserved, and bad moves are refused with a reason and change nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.design.designer import design
from contracts.design.exchange import STATES, ExchangeParams, exchange_game
from contracts.exchange import Exchange
from ledger.block import BlockHeader, Genesis
from ledger.contract import BURN_ADDRESS
from ledger.crypto import KeyPair
from ledger.state import State, build_block, genesis_header
from ledger.tx import Tx, contract_call
from node.engines import chain_engines

SELLER, BUYER, OTHER = (KeyPair(bytes([i]) * 32) for i in (1, 2, 3))
CHAIN = "exchange-test"
START = 1_000
DESIGN = design(exchange_game(ExchangeParams()))
TABLE = [
    v
    for s in STATES
    for v in (DESIGN.transfer(s, "seller"), DESIGN.transfer(s, "buyer"), DESIGN.burn(s))
]
WINDOW = 3  # seconds of ledger time
SECOND = 1000  # the test chain makes a block each second of ledger time


class Chain:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        balances = {k.address.hex(): START for k in (SELLER, BUYER, OTHER)}
        genesis = Genesis(CHAIN, 0, (), balances)
        self.state = State.from_genesis(genesis, chain_engines())
        self.parent = genesis_header(genesis)
        self.nonces = {k.address: 0 for k in (SELLER, BUYER, OTHER)}
        self.cid = b""

    def block(self, *txs: Tx) -> list[str]:
        block, self.state, receipts = build_block(
            self.state, self.parent, txs, "n0", self.parent.timestamp_ms + SECOND
        )
        self.parent: BlockHeader = block.header
        return [r.reason for r in receipts]

    def tx(self, key: KeyPair, op: str, **args: object) -> Tx:
        tx = contract_call(key, CHAIN, self.nonces[key.address], "exchange", op, self.cid, args)
        return tx

    def move(self, key: KeyPair, op: str, **args: object) -> str:
        tx = self.tx(key, op, **args)
        (reason,) = self.block(tx)
        if reason == "ok":
            self.nonces[key.address] += 1
        return reason

    def terms(self, **changes: object) -> dict[str, object]:
        """The default offer of this test chain: the designed table, seller offering."""
        terms: dict[str, object] = {
            "role": "seller",
            "counterparty": BUYER.address,
            "item": "a lamp",
            "price": 100,
            "deposit_seller": DESIGN.deposit("seller"),
            "deposit_buyer": DESIGN.deposit("buyer"),
            "table": TABLE,
            "windows": [self.window] * 5,
        }
        return terms | changes

    def offer(self, **changes: object) -> str:
        return self.move(SELLER, "offer", **self.terms(**changes))

    def open(self, offerer: KeyPair = SELLER, accepter: KeyPair = BUYER, **changes: object) -> None:
        """Offer and accept: the contract is then waiting for delivery."""
        self.cid = b""
        offer = self.tx(offerer, "offer", **self.terms(**changes))
        assert self.block(offer) == ["ok"]
        self.nonces[offerer.address] += 1
        self.cid = offer.tx_id
        assert self.move(accepter, "accept") == "ok"

    def idle(self, blocks: int) -> None:
        for _ in range(blocks):
            self.block()

    @property
    def exchange(self) -> Exchange:
        return Exchange.decode(self.state.contracts[self.cid].data)

    def balance(self, key: KeyPair | bytes) -> int:
        address = key if isinstance(key, bytes) else key.address
        return self.state.account(address).balance


def settled_as(c: Chain, state: str) -> None:
    ex = c.exchange
    assert ex.stage == "settled" and ex.final_state() == state
    to_seller, to_buyer, burn = ex.row(state)
    assert c.balance(SELLER) == START - DESIGN.deposit("seller") + to_seller
    assert c.balance(BUYER) == START - 100 - DESIGN.deposit("buyer") + to_buyer
    assert c.balance(BURN_ADDRESS) == burn
    assert c.state.contracts[c.cid].escrow == 0
    assert c.state.total_supply() == 3 * START


# Each ending: moves ("who:op") or "wait" (a window passes), and the final state reached.
ENDINGS = {
    "honest": (["S:deliver", "B:redeem", "B:no_complaint", "S:deny_fault"], "RNN"),
    "low quality, complaint admitted": (
        ["S:deliver", "B:refund", "B:complain", "S:admit_fault"],
        "XCF",
    ),
    "unjustified complaint not admitted": (["S:deliver", "B:redeem", "B:complain", "wait"], "RCN"),
    "everything expires after delivery": (["S:deliver", "wait", "wait", "wait"], "XNN"),
    "seller never delivers": (["wait", "B:refund", "B:complain", "S:admit_fault"], "XCF"),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_every_ending_pays_exactly_its_row_of_the_table(ending: str) -> None:
    c = Chain()
    c.open()
    steps, final = ENDINGS[ending]
    for step in steps:
        if step == "wait":
            c.idle(WINDOW + 1)  # the move is not made: its default applies
            continue
        who, op = step.split(":")
        assert c.move(SELLER if who == "S" else BUYER, op) == "ok", step
    settled_as(c, final)
    defaults = [m for m in c.exchange.history if m.by == "deadline"]
    assert len(defaults) == steps.count("wait")


def test_an_offer_nobody_accepts_is_cancelled_and_refunded() -> None:
    c = Chain()
    assert c.offer() == "ok"
    c.idle(WINDOW + 1)
    assert c.balance(SELLER) == START and c.state.total_supply() == 3 * START


def test_bad_moves_are_refused_and_change_nothing() -> None:
    c = Chain(window=10)
    c.open()
    record = c.state.contracts[c.cid]
    balances = [c.balance(k) for k in (SELLER, BUYER, OTHER)]
    assert c.move(BUYER, "redeem") == "out_of_turn"  # before delivery
    assert c.move(BUYER, "deliver") == "wrong_party"
    assert c.move(OTHER, "deliver") == "wrong_party"
    assert c.move(BUYER, "accept") == "already_moved"  # twice
    assert c.move(SELLER, "fly") == "bad_op"
    assert c.state.contracts[c.cid] == record  # refused moves changed nothing
    assert [c.balance(k) for k in (SELLER, BUYER, OTHER)] == balances
    c.idle(10)
    assert c.move(SELLER, "deliver") == "deadline_passed"
    c.idle(40)
    assert c.move(SELLER, "deliver") == "contract_closed"
    assert c.state.total_supply() == 3 * START


def test_offers_with_a_bad_table_or_too_little_money_are_refused() -> None:
    c = Chain()
    bad = list(TABLE)
    bad[0] += 1
    assert c.offer(table=bad) == "bad_table"
    assert c.offer(deposit_seller=DESIGN.deposit("seller") + 1) == "bad_table"  # rows != total
    big = [v * 1000 for v in TABLE]
    terms = {
        "role": "seller",
        "counterparty": BUYER.address,
        "item": "x",
        "price": 100_000,
        "deposit_seller": DESIGN.deposit("seller") * 1000,
        "deposit_buyer": 0,
        "table": big,
        "windows": [3] * 5,
    }
    assert c.move(SELLER, "offer", **terms) == "insufficient_funds"  # deposit > balance
    assert c.state.contracts == {} and c.balance(SELLER) == START
    terms["deposit_seller"], terms["table"] = 0, [v * 1000 for v in TABLE[:3]] * 8
    terms["table"] = [r for s in STATES for r in (0, 0, 100_000)]
    offer = c.tx(SELLER, "offer", **terms)
    assert c.block(offer) == ["ok"]
    c.nonces[SELLER.address] += 1
    c.cid = offer.tx_id
    assert c.move(BUYER, "accept") == "insufficient_funds"  # the buyer cannot pay 100,000
    assert c.exchange.stage == "await_accept" and c.balance(BUYER) == START


OPS = [
    "deliver",
    "redeem",
    "refund",
    "complain",
    "no_complaint",
    "admit_fault",
    "deny_fault",
    "accept",
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([SELLER, BUYER, OTHER]), st.sampled_from(OPS), st.integers(0, 4)),
        max_size=12,
    )
)
def test_any_sequence_of_moves_conserves_money_and_pays_a_table_row(
    moves: list[tuple[KeyPair, str, int]],
) -> None:
    c = Chain()
    c.open()
    for key, op, wait in moves:
        c.move(key, op)
        c.idle(wait)
        assert c.state.total_supply() == 3 * START
    c.idle(6 * (WINDOW + 1))
    settled_as(c, c.exchange.final_state())


def test_the_buyer_can_offer_and_the_seller_accept() -> None:
    c = Chain()
    offer = c.tx(BUYER, "offer", **c.terms(role="buyer", counterparty=SELLER.address))
    assert c.block(offer) == ["ok"]
    c.nonces[BUYER.address] += 1
    c.cid = offer.tx_id
    assert c.balance(BUYER) == START - 100 - DESIGN.deposit("buyer")  # paid in at the offer
    assert c.move(BUYER, "accept") == "wrong_party"  # the offerer cannot accept its own offer
    assert c.move(SELLER, "accept") == "ok"
    for who, op in (
        (SELLER, "deliver"),
        (BUYER, "redeem"),
        (BUYER, "no_complaint"),
        (SELLER, "deny_fault"),
    ):
        assert c.move(who, op) == "ok"
    settled_as(c, "RNN")
