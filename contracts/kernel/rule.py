"""What a mechanism supplies to the kernel: a `Rule`, and the `Settlement` it computes.

The kernel (contracts/kernel/engine.py) owns everything the mechanisms share: parties,
deposits in escrow, the commit and reveal phases in ledger time, the penalty for a
missing reveal, the draw from the revealed salts, and the conservation check on every
transition.  A rule owns only its economics: its designed schedule (data, re-verified
exactly at `create`), which messages are valid, what a missing message counts as, and
the settlement.  Rules are pure and deterministic: no clock, no float, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ledger.contract import ContractError

MissingCommit = Literal["absent", "cancel"]


class BadTerms(ContractError):
    """The terms are malformed, or the designed schedule fails its exact checks."""

    def __init__(self, message: str, reason: str = "bad_terms") -> None:
        super().__init__(reason, message)


class BadMessage(ContractError):
    """A revealed message the rule does not accept (the reveal fails; nothing changes)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_message", message)


@dataclass(frozen=True)
class Seats:
    """Who is in the contract, as the rule sees it at settlement."""

    contract_id: bytes
    creator: bytes  # who created it: the seller of an auction, the builder of a public good
    parties: tuple[bytes, ...]  # the parties who send sealed messages, in creation order
    draw: bytes  # 32 bytes fixed by every party's salt: nobody knew it before the reveals


@dataclass(frozen=True)
class Settlement:
    """Where the escrow goes.  `transfers[i]` is party i's net gain (+) or payment (-) on
    top of getting its deposit back; `receipts` pays accounts that are not parties (the
    seller, the builder, a surplus account); `burn` is destroyed.  The kernel checks that
    -sum(transfers) == sum(receipts) + burn and that nobody's payment exceeds what it holds
    in escrow, and refuses (fails the tx) otherwise."""

    transfers: tuple[int, ...]
    receipts: Mapping[bytes, int] = field(default_factory=dict)
    burn: int = 0
    outcome: Mapping[str, Any] = field(default_factory=dict)  # plain canonical values, shown


class Rule(Protocol):
    name: str  # the engine name on the chain ("auction", "pivot", "agv", "bilateral")
    # A party that never commits: "absent" leaves it out (an auction bidder who stays
    # away); "cancel" cancels the whole contract and refunds every deposit (a mechanism
    # that needs every named party, such as AGV or bilateral trade).
    missing_commit: MissingCommit

    def terms(self, args: Mapping[str, Any], parties: int) -> dict[str, Any]:
        """Validate and normalise the designed schedule for `parties` parties, re-running
        the design's exact checks; raise BadTerms (reason "unsafe_design" when a check
        fails).  The result is stored as the contract's terms (plain canonical values)."""
        ...

    def min_deposit(self, terms: Mapping[str, Any], index: int) -> int:
        """The least party `index` must hold in escrow before it may commit, not counting
        the penalty: at least the most settlement can ever take from it."""
        ...

    def message(self, terms: Mapping[str, Any], index: int, value: Any, deposit: int) -> Any:
        """Check a revealed message (party `index`, holding `deposit`) and return it in
        normal form; raise BadMessage when it is not allowed (a bid above the deposit)."""
        ...

    def default(self, terms: Mapping[str, Any], index: int) -> Any | None:
        """What a committed party's message counts as when it never reveals (None: the
        party counts as absent)."""
        ...

    def settle(
        self, terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
    ) -> Settlement:
        """The outcome from every party's message (None for an absent party)."""
        ...
