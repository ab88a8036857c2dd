"""A sealed-bid second-price auction on the ledger, for random bids, deposits and silent
bidders: a bid above its deposit cannot be revealed, a committed bidder who stays silent
forfeits the penalty and its bid counts as absent, the highest revealed bid at or above
the reserve wins at the larger of the second bid and the reserve, the seller receives
exactly that, and money is conserved to the unit (the chain checks it after every block)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.kernel.engine import KernelEngine
from contracts.mechanisms.auction import AuctionRule
from ledger.contract import BURN_ADDRESS, engine_table
from tests.helpers.sealed import WINDOW, SealedChain, keys

SELLER, *BIDDERS = keys(6)
PENALTY = 4
BALANCE = 10_000

BID = st.tuples(
    st.integers(0, 60),  # the bid
    st.integers(0, 80),  # the deposit beyond the penalty (may be below the bid)
    st.booleans(),  # reveals
)


@settings(max_examples=40, deadline=None)
@given(st.lists(BID, min_size=1, max_size=len(BIDDERS)), st.integers(0, 40))
def test_second_price_on_the_ledger(bids: list[tuple[int, int, bool]], reserve: int) -> None:
    people = BIDDERS[: len(bids)]
    ch = SealedChain(engine_table(KernelEngine(AuctionRule())), [SELLER, *people], BALANCE)
    terms = {"format": "second", "units": 1, "reserve": reserve}
    assert ch.create("auction", SELLER, people, penalty=PENALTY, terms=terms) == "ok"
    for key, (bid, extra, _) in zip(people, bids, strict=True):
        assert ch.call(key, "deposit", amount=PENALTY + extra) == "ok"
        assert ch.commit(key, bid) == "ok"
    burnt = ch.state.balance(BURN_ADDRESS)
    revealed: dict[int, int] = {}
    for i, (key, (bid, extra, reveals)) in enumerate(zip(people, bids, strict=True)):
        if not reveals:
            continue
        before = ch.state.contracts[ch.cid]
        got = ch.reveal(key, bid)
        if bid > PENALTY + extra:  # above its deposit: refused, nothing changes
            assert got == "bad_message" and ch.state.contracts[ch.cid] == before
        else:
            assert got == "ok"
            revealed[i] = bid
    ch.wait(WINDOW + 1)
    s = ch.contract()
    assert s.phase == "settled" and ch.state.contracts[ch.cid].escrow == 0
    silent = [i for i in range(len(bids)) if i not in revealed]
    top = max(revealed.values(), default=-1)
    winners = [i for i, u in enumerate(s.outcome["units"]) if u]
    if top < reserve:
        assert winners == []
    else:  # one of the highest bidders (ties go by the hash of contract and bidder)
        assert len(winners) == 1 and revealed.get(winners[0]) == top
    price = 0
    if winners:
        price = max([reserve, *(b for i, b in revealed.items() if i != winners[0])])
    assert ch.balance(SELLER) == BALANCE + price
    for i, key in enumerate(people):
        paid = (PENALTY if i in silent else 0) + (price if i in winners else 0)
        assert ch.balance(key) == BALANCE - paid, (i, bids, reserve)
    assert ch.state.balance(BURN_ADDRESS) == burnt + PENALTY * len(silent)
