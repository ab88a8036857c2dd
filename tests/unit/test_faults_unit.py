"""Unit tests of the fault machinery: specs, network rules, the controller, Byzantine
behaviours, equivocation evidence (proof and ledger) and `tally check`'s chain comparison."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.events import Action, Broadcast, ClientTx, MessageReceived, Persist, Send, TimerFired
from consensus.messages import Blocks
from consensus.pbft.messages import (
    Checkpoint,
    Commit,
    Prepare,
    PrePrepare,
    Signed,
    Status,
    sign,
    signed_by,
)
from consensus.pbft.proofs import contradicts, valid_evidence
from ledger.crypto import KeyPair
from ledger.encoding import Struct
from ledger.errors import MalformedTx
from ledger.state import BAD_NONCE, MALFORMED, OK, State, apply_txs, build_block
from ledger.store import Store
from ledger.tx import EVIDENCE, MAX_EVIDENCE_BYTES, Tx, evidence, transfer
from node.cli.fault import compare
from node.engines import chain_engines
from node.faults.behaviour import RawAction, SendRaw
from node.faults.byzantine import BEHAVIOURS, Byzantine, Equivocate, Flood
from node.faults.controller import FaultController
from node.faults.network import FaultyTransport, NetworkRules
from node.faults.powattacks import ATTACKS
from node.faults.spec import CATALOGUE, FaultError, FaultSpec
from node.sim.cluster import SimCluster
from node.transport.base import FrameHandler, TransportStats

ACCOUNTS = {"alice": 10**9, "bob": 10**9}
NODES = ["n0", "n1", "n2", "n3"]
PEERS_OF_N0 = {"n1", "n2", "n3"}
V = TypeVar("V", Prepare, Commit)
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers ---------------------------------------------------------------------------------


def spec(kind: str, **fields: Any) -> FaultSpec:
    return FaultSpec.from_dict({"kind": kind, **fields})


def cluster() -> SimCluster:
    return SimCluster(4, 1, accounts=ACCOUNTS)


def a_transfer(c: SimCluster, nonce: int = 0, amount: int = 5) -> Tx:
    to = c.accounts["bob"].address
    return transfer(c.accounts["alice"], c.genesis.chain_id, nonce, to, amount)


def propose(c: SimCluster, txs: int = 2) -> list[Action]:
    """The actions of primary n0 proposing one batch of `txs` transfers."""
    n0 = c.replicas["n0"]
    actions: list[Action] = []
    for nonce in range(txs):
        actions += n0.step(ClientTx(a_transfer(c, nonce)), 0)
    return actions + n0.step(TimerFired("batch"), 100)


def broadcast_pp(actions: Sequence[RawAction]) -> PrePrepare:
    pps = [a.message for a in actions if isinstance(a, Broadcast)]
    assert pps and isinstance(pps[0], PrePrepare)
    return pps[0]


def prepare_from(c: SimCluster, node: str, pp: PrePrepare) -> Prepare:
    out = c.replicas[node].step(MessageReceived("n0", pp), 100)
    prepares = [a.message for a in out if isinstance(a, Broadcast)]
    assert prepares and isinstance(prepares[0], Prepare)
    return prepares[0]


def byzantine(c: SimCluster, node: str, kind: str, seed: int = 7, **params: Any) -> Byzantine:
    b = Byzantine(node, c.members, seed)
    b.attach(c.replicas[node])
    b.add(spec(kind, node=node, id=f"{kind}-1", params=params))
    return b


def outgoing(actions: Sequence[RawAction]) -> list[Signed]:
    """The signed messages sent (every one this test file looks at is signed)."""
    out = [a.message for a in actions if isinstance(a, Send | Broadcast)]
    assert all(isinstance(m, Signed) for m in out)
    return cast(list[Signed], out)


def key_of(c: SimCluster, node: str) -> KeyPair:
    return c.nodes[node].key


def public(c: SimCluster, node: str) -> bytes:
    return key_of(c, node).public_key


def vote(c: SimCluster, cls: type[V], node: str, digest: bytes, **kw: int) -> V:
    """A vote by `node` for (view 0, seq 1) unless told otherwise, correctly signed."""
    view, seq = kw.get("view", 0), kw.get("seq", 1)
    return sign(cls(view, seq, digest, c.config.index_of(node), b""), key_of(c, node))


def payload(member: str, a: Struct | bytes, b: Struct | bytes) -> dict[str, Any]:
    enc = [m if isinstance(m, bytes) else m.encode() for m in (a, b)]
    return {"member": member, "a": enc[0], "b": enc[1]}


D1, D2 = bytes([1]) * 32, bytes([2]) * 32


# -- 1. FaultSpec ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CATALOGUE))
def test_every_kind_parses_with_its_defaults(kind: str) -> None:
    s = FaultSpec.from_dict({"kind": kind})
    assert (s.kind, s.node, s.params, s.id) == (kind, "*", {}, "")
    assert (s.at_seconds, s.at_height, s.duration_seconds) == (None, None, None)
    assert s.category == CATALOGUE[kind].category
    for name, default in CATALOGUE[kind].params.items():
        assert s.param(name) == default and type(s.param(name)) is type(default)


def test_catalogue_categories_and_behaviours_agree() -> None:
    byz = {k for k, v in CATALOGUE.items() if v.category == "byzantine"}
    assert set(BEHAVIOURS) | set(ATTACKS) == byz - {"twins"}
    process = {k for k, v in CATALOGUE.items() if v.category == "process"}
    assert process == {"kill", "pause", "restart"}


def test_typed_params_are_accepted_and_normalised() -> None:
    assert spec("drop", probability=1).params == {"probability": 1.0}
    assert type(spec("drop", probability=1).params["probability"]) is float
    assert spec("drop", probability=0).param("probability") == 0.0
    assert spec("delay", ms=0, jitter_ms=7).params == {"ms": 0, "jitter_ms": 7}
    assert spec("flood", oversize=True, frames=3).params == {"oversize": True, "frames": 3}
    assert spec("partition", groups=5).params == {"groups": "5"}  # strings are str()-ed
    nested = spec("reorder", params={"window_ms": 9}, probability=0.5)
    assert nested.params == {"window_ms": 9, "probability": 0.5}
    assert nested.param("window_ms") == 9
    assert spec("delay", ms=10).param("jitter_ms") == 50  # default for what is not given
    timed = spec("isolate", node="n2", at_seconds=3, at_height=4, duration_seconds=0, id="x")
    assert (timed.node, timed.at_seconds, timed.at_height) == ("n2", 3.0, 4)
    assert timed.duration_seconds == 0.0 and timed.id == "x" and type(timed.at_seconds) is float


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "drop", "probability": "high"},
        {"kind": "drop", "probability": True},
        {"kind": "drop", "probability": 1.0001},
        {"kind": "drop", "probability": -0.1},
        {"kind": "drop", "probability": float("nan")},
        {"kind": "delay", "ms": -1},
        {"kind": "delay", "ms": 1.5},
        {"kind": "delay", "ms": "100"},
        {"kind": "delay", "jitter_ms": True},
        {"kind": "flood", "oversize": 1},
        {"kind": "flood", "oversize": "true"},
        {"kind": "drop", "at_seconds": -1},
        {"kind": "drop", "at_seconds": "soon"},
        {"kind": "drop", "at_seconds": True},
        {"kind": "drop", "at_height": 1.5},
        {"kind": "drop", "at_height": -2},
        {"kind": "drop", "duration_seconds": -0.5},
    ],
    ids=repr,
)
def test_bad_values_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(FaultError):
        FaultSpec.from_dict(raw)


def test_unknown_kind_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(FaultError, match="unknown fault kind 'meteor'") as e:
        FaultSpec.from_dict({"kind": "meteor"})
    assert "drop" in str(e.value) and "equivocate" in str(e.value)
    with pytest.raises(FaultError):
        FaultSpec.from_dict({"node": "n1"})  # no kind at all


def test_unknown_param_names_the_params_the_kind_takes() -> None:
    with pytest.raises(FaultError, match="probability") as e:
        FaultSpec.from_dict({"kind": "delay", "probability": 0.5})
    assert "ms" in str(e.value) and "jitter_ms" in str(e.value)
    with pytest.raises(FaultError, match="takes none"):
        FaultSpec.from_dict({"kind": "isolate", "groups": "n0|n1"})


def test_parse_cli_form_with_aliases() -> None:
    s = FaultSpec.parse("kind=drop,node=n1,probability=0.3,at=2,duration=5,height=7")
    assert s == FaultSpec(
        "drop", "n1", {"probability": 0.3}, at_seconds=2.0, at_height=7, duration_seconds=5.0
    )
    spaced = FaultSpec.parse("kind=delay, node=n2, ms=40, jitter_ms=0")
    assert spaced == FaultSpec("delay", "n2", {"ms": 40, "jitter_ms": 0})
    assert FaultSpec.parse("kind=flood,oversize=true").param("oversize") is True
    assert FaultSpec.parse("kind=flood,oversize=false").param("oversize") is False


def test_parse_keeps_commas_inside_a_value() -> None:
    s = FaultSpec.parse("kind=partition,groups=n0,n1|n2,n3,at=1.5")
    assert s.params == {"groups": "n0,n1|n2,n3"} and s.at_seconds == 1.5
    assert FaultSpec.parse("kind=partition,groups=n0,n1|n2,n3").params["groups"] == "n0,n1|n2,n3"
    assert FaultSpec.parse("kind=equivocate,colluders=n1,n2,node=n0").params == {
        "colluders": "n1,n2"
    }


def test_text_parameters_stay_as_written() -> None:
    """Hypothesis found it: a tx id of digits ("000...0", or "1e10") was parsed as a number."""
    for tx in ("0" * 64, "1e10" + "0" * 60):
        spec = FaultSpec.parse(f"kind=double_spend,node=n0,tx={tx},confirmations=3")
        assert spec.params == {"tx": tx, "confirmations": 3}
        assert FaultSpec.parse(spec.describe()) == spec


@pytest.mark.parametrize(
    "text", ["kind=drop,oops", "oops", "kind=drop,probability=2", "kind=nope", "node=n1"]
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(FaultError):
        FaultSpec.parse(text)


NAMES = st.sampled_from([*NODES, "n4", "n10"])
NAME_LISTS = st.lists(NAMES, min_size=1, max_size=3, unique=True).map(",".join)
STRING_PARAMS = {
    "groups": st.lists(NAME_LISTS, min_size=0, max_size=3).map("|".join),
    "colluders": st.one_of(st.just(""), NAME_LISTS),
    "tx": st.binary(min_size=32, max_size=32).map(bytes.hex),  # a payment's tx id
}
SECONDS = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


def value_for(name: str, default: Any) -> st.SearchStrategy[Any]:
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, float):
        return st.floats(0, 1, allow_nan=False)
    if isinstance(default, int):
        return st.integers(0, 10**9)
    return STRING_PARAMS[name]


@st.composite
def specs(draw: st.DrawFn, *, with_bools: bool = True, with_id: bool = True) -> FaultSpec:
    kind = draw(st.sampled_from(sorted(CATALOGUE)))
    params = {
        name: draw(value_for(name, default))
        for name, default in CATALOGUE[kind].params.items()
        if (with_bools or not isinstance(default, bool)) and draw(st.booleans())
    }
    raw: dict[str, Any] = {"kind": kind, "node": draw(st.one_of(st.just("*"), NAMES))}
    raw["params"] = params
    for key, strategy in (
        ("at_seconds", SECONDS),
        ("at_height", st.integers(0, 10**9)),
        ("duration_seconds", SECONDS),
    ):
        if draw(st.booleans()):
            raw[key] = draw(strategy)
    if with_id and draw(st.booleans()):
        raw["id"] = draw(st.sampled_from(["f1", "n0-3", "custom"]))
    return FaultSpec.from_dict(raw)


@FEW
@given(specs(with_bools=False, with_id=False))
def test_describe_then_parse_round_trips(s: FaultSpec) -> None:
    assert FaultSpec.parse(s.describe()) == s


@FEW
@given(specs())
def test_to_dict_then_from_dict_round_trips(s: FaultSpec) -> None:
    assert FaultSpec.from_dict(s.to_dict()) == s
    assert FaultSpec.from_dict(s.to_dict()).to_dict() == s.to_dict()


@pytest.mark.parametrize("oversize", [True, False])
def test_describe_then_parse_round_trips_bool_params(oversize: bool) -> None:
    s = spec("flood", oversize=oversize)
    assert FaultSpec.parse(s.describe()) == s


# -- 2. NetworkRules and FaultyTransport -----------------------------------------------------


def rules(me: str, *faults: FaultSpec) -> NetworkRules:
    r = NetworkRules(me)
    for i, f in enumerate(faults):
        r.active[f"f{i}"] = f
    return r


def test_no_rules_route_one_undelayed_copy() -> None:
    r = rules("n0")
    assert [r.route("n1", random.Random(0)) for _ in range(5)] == [[0]] * 5
    assert not r.blocks_inbound("n1")
    assert sum(r.counts.values()) == 0


def test_drop_probability_one_loses_everything_and_zero_nothing() -> None:
    rng = random.Random(1)
    always = rules("n0", spec("drop", probability=1.0))
    assert all(always.route("n1", rng) == [] for _ in range(200))
    assert always.counts["dropped"] == 200
    never = rules("n0", spec("drop", probability=0.0))
    assert all(never.route("n1", rng) == [0] for _ in range(200))
    assert never.counts["dropped"] == 0
    assert not always.blocks_inbound("n1")  # drop is outbound only


def test_drop_probability_is_roughly_honoured() -> None:
    r = rules("n0", spec("drop", probability=0.3))
    rng = random.Random(2)
    lost = sum(r.route("n1", rng) == [] for _ in range(4000))
    assert 1000 < lost < 1400 and r.counts["dropped"] == lost


def test_duplicate_probability_one_makes_two_copies() -> None:
    r = rules("n0", spec("duplicate", probability=1.0))
    rng = random.Random(3)
    assert [r.route("n2", rng) for _ in range(10)] == [[0, 0]] * 10
    assert r.counts["duplicated"] == 10


def test_delay_adds_ms_plus_up_to_jitter() -> None:
    rng = random.Random(4)
    fixed = rules("n0", spec("delay", ms=70, jitter_ms=0))
    assert fixed.route("n1", rng) == [70]
    r = rules("n0", spec("delay", ms=100, jitter_ms=50))
    seen = [d for _ in range(500) for d in r.route("n1", rng)]
    assert all(100 <= d <= 150 for d in seen)
    assert min(seen) < 110 and max(seen) > 140  # the jitter is actually used


def test_duplicates_are_each_delayed() -> None:
    r = rules("n0", spec("duplicate", probability=1.0), spec("delay", ms=10, jitter_ms=5))
    rng = random.Random(5)
    for _ in range(50):
        copies = r.route("n1", rng)
        assert len(copies) == 2 and all(10 <= d <= 15 for d in copies)


def test_reorder_adds_one_to_window() -> None:
    r = rules("n0", spec("reorder", probability=1.0, window_ms=20))
    rng = random.Random(6)
    seen = [d for _ in range(300) for d in r.route("n1", rng)]
    assert all(1 <= d <= 20 for d in seen) and {1, 20} <= set(seen)
    assert r.counts["reordered"] == 300
    none = rules("n0", spec("reorder", probability=0.0, window_ms=20))
    assert none.route("n1", rng) == [0] and none.counts["reordered"] == 0
    tiny = rules("n0", spec("reorder", probability=1.0, window_ms=0))
    assert tiny.route("n1", rng) == [1]  # a zero window still moves it


def test_route_is_deterministic_for_a_seed() -> None:
    faults = (spec("drop", probability=0.4), spec("delay", ms=5, jitter_ms=30))
    runs = [
        [rules("n0", *faults).route("n1", rng) for _ in range(100)]
        for rng in (random.Random(9), random.Random(9))
    ]
    assert runs[0] == runs[1]


def test_partition_passes_own_side_and_drops_the_other() -> None:
    r = rules("n0", spec("partition", groups="n0,n1|n2,n3"))
    rng = random.Random(7)
    assert r.route("n1", rng) == [0]
    assert r.route("n2", rng) == [] and r.route("n3", rng) == []
    assert r.counts["partitioned"] == 2
    assert not r.blocks_inbound("n1")
    assert r.blocks_inbound("n2") and r.blocks_inbound("n3")
    assert r.counts["refused_inbound"] == 2
    other = rules("n3", spec("partition", groups="n0,n1|n2,n3"))
    assert other.route("n2", rng) == [0] and other.route("n0", rng) == []


def test_a_node_in_no_group_is_alone() -> None:
    rng = random.Random(8)
    outsider = rules("n4", spec("partition", groups="n0,n1|n2,n3"))
    assert all(outsider.route(p, rng) == [] for p in NODES)
    assert all(outsider.blocks_inbound(p) for p in NODES)
    member = rules("n0", spec("partition", groups="n0,n1|n2,n3"))
    assert member.route("n4", rng) == [] and member.blocks_inbound("n4")


def test_partition_groups_tolerate_spaces_after_commas() -> None:
    s = FaultSpec.parse("kind=partition,groups=n0, n1|n2, n3")
    assert rules("n1", s).route("n0", random.Random(0)) == [0]


def test_isolate_drops_everything_both_ways() -> None:
    r = rules("n1", spec("isolate"))
    rng = random.Random(9)
    assert all(r.route(p, rng) == [] for p in ("n0", "n2", "n3"))
    assert all(r.blocks_inbound(p) for p in ("n0", "n2", "n3"))
    assert r.counts["isolated"] == 3 and r.counts["refused_inbound"] == 3


class FakeTransport:
    """Records what it is asked to send; `deliver` plays a frame arriving from a peer."""

    def __init__(self) -> None:
        self.stats = TransportStats()
        self.sent: list[tuple[str, bytes]] = []
        self.unchecked: list[tuple[str, bytes]] = []
        self.handler: FrameHandler | None = None
        self.stopped = False

    async def start(self, on_frame: FrameHandler) -> None:
        self.handler = on_frame

    def send(self, peer_id: str, payload: bytes) -> None:
        self.sent.append((peer_id, payload))

    def send_unchecked(self, peer_id: str, payload: bytes) -> None:
        self.unchecked.append((peer_id, payload))

    def broadcast(self, payload: bytes) -> None:
        self.sent.append(("*", payload))  # only without rules: they apply peer by peer

    async def stop(self) -> None:
        self.stopped = True

    async def deliver(self, peer: str, payload: bytes) -> None:
        assert self.handler is not None
        await self.handler(peer, payload)


def faulty(me: str, *faults: FaultSpec) -> tuple[FaultyTransport, FakeTransport]:
    inner = FakeTransport()
    return FaultyTransport(inner, rules(me, *faults), NODES, seed=1), inner


async def test_faulty_transport_without_rules_passes_straight_through() -> None:
    t, inner = faulty("n0")
    assert t.stats is inner.stats
    t.send("n1", b"a")
    t.broadcast(b"b")
    assert inner.sent == [("n1", b"a"), ("*", b"b")]
    t.send_unchecked("n2", b"big")
    assert inner.unchecked == [("n2", b"big")]
    await t.stop()
    assert inner.stopped


async def test_faulty_transport_drops_everything_with_drop_one() -> None:
    t, inner = faulty("n0", spec("drop", probability=1.0))
    for _ in range(20):
        t.send("n1", b"x")
    t.broadcast(b"y")
    await asyncio.sleep(0.01)
    assert inner.sent == []
    assert t.rules.counts["dropped"] == 23


async def test_faulty_transport_duplicates() -> None:
    t, inner = faulty("n0", spec("duplicate", probability=1.0))
    t.send("n2", b"x")
    assert inner.sent == [("n2", b"x"), ("n2", b"x")]


async def test_faulty_transport_sends_after_the_delay() -> None:
    t, inner = faulty("n0", spec("delay", ms=40, jitter_ms=0))
    t.send("n1", b"late")
    assert inner.sent == []
    await asyncio.sleep(0.01)
    assert inner.sent == []
    await asyncio.sleep(0.1)
    assert inner.sent == [("n1", b"late")]


async def test_faulty_transport_filters_inbound_across_a_partition() -> None:
    t, inner = faulty("n0", spec("partition", groups="n0,n1|n2,n3"))
    got: list[tuple[str, bytes]] = []

    async def on_frame(peer: str, data: bytes) -> None:
        got.append((peer, data))

    await t.start(on_frame)
    for peer in NODES[1:]:
        await inner.deliver(peer, peer.encode())
    assert got == [("n1", b"n1")]
    assert t.rules.counts["refused_inbound"] == 2
    t.broadcast(b"out")
    assert inner.sent == [("n1", b"out")]
    t.rules.active.clear()  # healed
    await inner.deliver("n2", b"again")
    assert got[-1] == ("n2", b"again")


# -- 3. FaultController ----------------------------------------------------------------------


def controller(node: str = "n1") -> FaultController:
    return FaultController(node, NetworkRules(node), Byzantine(node, NODES, 0))


def states(c: FaultController) -> dict[str, object]:
    return {str(row["id"]): row["state"] for row in c.listing()}


def test_inject_without_a_start_is_active_at_once() -> None:
    c = controller()
    s = c.inject(spec("drop", probability=0.5), 0.0, 0)
    assert s.id == "n1-1" and s.params == {"probability": 0.5}
    assert set(c.active) == {"n1-1"} and not c.pending
    assert c.network.active == {"n1-1": s}
    assert c.byzantine.active == {}
    assert c.listing() == [s.to_dict() | {"state": "active", "ends_at_s": None}]
    assert c.inject(spec("isolate", node="n1"), 0.0, 0).id == "n1-2"
    assert c.inject(spec("delay", id="mine"), 0.0, 0).id == "mine"  # a given id is kept


def test_at_seconds_waits_for_its_time() -> None:
    c = controller()
    s = c.inject(spec("isolate", at_seconds=5), 1.0, 0)
    assert states(c) == {s.id: "pending"} and c.network.active == {}
    assert c.next_deadline() == 5.0
    c.tick(4.99, 100)
    assert s.id in c.pending
    c.tick(5.0, 100)
    assert states(c) == {s.id: "active"} and s.id in c.network.active
    assert c.next_deadline() is None


def test_at_height_waits_for_its_height() -> None:
    c = controller()
    s = c.inject(spec("drop", at_height=3), 0.0, 0)
    c.tick(1000.0, 2)
    assert s.id in c.pending and not c.network.active
    assert c.next_deadline() is None  # a height is not a deadline
    c.tick(1000.0, 3)
    assert s.id in c.network.active


def test_at_seconds_and_height_need_both() -> None:
    c = controller()
    s = c.inject(spec("drop", at_seconds=2, at_height=2), 0.0, 0)
    c.tick(3.0, 1)
    c.tick(1.0, 5)
    assert s.id in c.pending
    c.tick(2.0, 2)
    assert s.id in c.active


def test_duration_ends_it() -> None:
    c = controller()
    s = c.inject(spec("partition", groups="n0|n1", duration_seconds=2), 10.0, 0)
    assert c.active[s.id] == (s, 12.0)
    assert c.listing()[0]["ends_at_s"] == 12.0
    assert c.next_deadline() == 12.0
    c.tick(11.9, 0)
    assert s.id in c.network.active
    c.tick(12.0, 0)
    assert c.active == {} and c.network.active == {} and c.listing() == []


def test_a_delayed_fault_lasts_its_duration_from_its_start() -> None:
    c = controller()
    s = c.inject(spec("mute", at_seconds=5, duration_seconds=3), 0.0, 0)
    assert c.next_deadline() == 5.0
    c.tick(6.0, 0)  # started late: ends 3 s after it started
    assert c.active[s.id] == (s, 9.0) and s.id in c.byzantine.active
    c.tick(8.9, 0)
    assert s.id in c.byzantine.active
    c.tick(9.0, 0)
    assert c.byzantine.active == {} and c.active == {}


def test_heal_one_and_heal_all() -> None:
    c = controller()
    a = c.inject(spec("drop"), 0.0, 0)
    b = c.inject(spec("forge"), 0.0, 0)
    later = c.inject(spec("isolate", at_seconds=100), 0.0, 0)
    assert c.heal(a.id) == [a.id]
    assert a.id not in c.network.active and b.id in c.byzantine.active
    assert set(c.heal()) == {b.id, later.id}
    assert c.active == {} and c.pending == {} and c.byzantine.active == {}
    assert c.heal() == []
    c.tick(200.0, 0)  # the healed pending fault never starts
    assert c.active == {}


def test_heal_of_a_pending_fault_by_id() -> None:
    c = controller()
    s = c.inject(spec("drop", at_height=9), 0.0, 0)
    assert c.heal(s.id) == [s.id]
    c.tick(0.0, 10)
    assert c.active == {} and c.network.active == {}


def test_heal_of_an_unknown_id_raises() -> None:
    c = controller()
    with pytest.raises(FaultError, match="nope"):
        c.heal("nope")
    s = c.inject(spec("drop", duration_seconds=1), 0.0, 0)
    c.tick(1.0, 0)
    with pytest.raises(FaultError):
        c.heal(s.id)  # already over


@pytest.mark.parametrize("kind", ["kill", "pause", "restart", "twins"])
def test_process_faults_and_twins_are_refused(kind: str) -> None:
    c = controller()
    with pytest.raises(FaultError):
        c.inject(spec(kind), 0.0, 0)
    assert c.active == {} and c.pending == {}


def test_a_fault_for_another_node_is_refused() -> None:
    c = controller("n1")
    with pytest.raises(FaultError, match="n2"):
        c.inject(spec("drop", node="n2"), 0.0, 0)
    assert c.listing() == []
    assert c.inject(spec("drop", node="*"), 0.0, 0).id in c.active


@pytest.mark.parametrize("kind", sorted(BEHAVIOURS))
def test_byzantine_kinds_go_to_the_byzantine_rewriter(kind: str) -> None:
    c = controller()
    s = c.inject(spec(kind), 0.0, 0)
    assert isinstance(c.byzantine.active[s.id], BEHAVIOURS[kind])
    assert c.network.active == {}
    c.heal(s.id)
    assert c.byzantine.active == {}


@pytest.mark.parametrize("kind", sorted(k for k, v in CATALOGUE.items() if v.category == "network"))
def test_network_kinds_go_to_the_network_rules(kind: str) -> None:
    c = controller()
    s = c.inject(spec(kind), 0.0, 0)
    assert c.network.active == {s.id: s} and c.byzantine.active == {}


# -- 4. Byzantine behaviours on a real replica -----------------------------------------------


def test_without_a_replica_or_behaviours_actions_pass_unchanged() -> None:
    c = cluster()
    actions = propose(c)
    detached = Byzantine("n0", NODES, 1)
    detached.add(spec("mute", id="m"))
    assert detached.rewrite(actions) == actions
    honest = Byzantine("n0", NODES, 1)
    honest.attach(c.replicas["n0"])
    assert honest.rewrite(actions) == actions
    assert honest.peers == ["n1", "n2", "n3"]


def test_equivocating_primary_sends_two_signed_pre_prepares_to_disjoint_halves() -> None:
    c = cluster()
    actions = propose(c)
    pp = broadcast_pp(actions)
    out = byzantine(c, "n0", "equivocate").rewrite(actions)
    assert not any(isinstance(a, Broadcast) for a in out)
    assert [a for a in out if isinstance(a, Persist)] == [
        a for a in actions if isinstance(a, Persist)
    ]  # what it keeps for itself is the honest one
    sends = [(a.to, a.message) for a in out if isinstance(a, Send)]
    by_digest: dict[bytes, set[str]] = {}
    by_message: list[PrePrepare] = []
    for to, m in sends:
        assert isinstance(m, PrePrepare) and m.batch is not None
        assert signed_by(m, public(c, "n0"))
        by_message.append(m)
        assert m.batch.digest == m.digest  # each version is self-consistent
        assert (m.view, m.seq, m.replica) == (pp.view, pp.seq, pp.replica)
        by_digest.setdefault(m.digest, set()).add(to)
    assert len(by_digest) == 2 and pp.digest in by_digest
    first, second = by_digest.values()
    assert first.isdisjoint(second) and first | second == PEERS_OF_N0
    assert first and second
    twin = next(m for m in by_message if m.digest != pp.digest)
    assert contradicts(pp, twin)


def test_equivocation_colluders_get_both_versions() -> None:
    c = cluster()
    out = byzantine(c, "n0", "equivocate", colluders="n3").rewrite(propose(c))
    to: dict[str, set[bytes]] = {}
    for a in out:
        if isinstance(a, Send) and isinstance(a.message, PrePrepare):
            to.setdefault(a.to, set()).add(a.message.digest)
    assert len(to["n3"]) == 2
    assert len(to["n1"]) == len(to["n2"]) == 1 and to["n1"] != to["n2"]


def test_equivocating_primary_also_sends_conflicting_commits() -> None:
    c = cluster()
    actions = propose(c)
    pp = broadcast_pp(actions)
    n0 = c.replicas["n0"]
    commits: list[Action] = []
    for node in ("n1", "n2"):
        prepare = prepare_from(c, node, pp)
        commits += n0.step(MessageReceived(node, prepare), 100)
    assert any(isinstance(a, Broadcast) and isinstance(a.message, Commit) for a in commits)
    out = byzantine(c, "n0", "equivocate").rewrite(commits)
    sent = [m for m in outgoing(out) if isinstance(m, Commit)]
    assert len(sent) == 3 and sent[0].digest == pp.digest != sent[-1].digest
    assert {m.digest for m in sent} == {pp.digest, sent[-1].digest}
    assert all(signed_by(m, public(c, "n0")) for m in sent)
    assert valid_evidence(payload("n0", sent[0], sent[-1]), c.config)


def test_equivocate_leaves_a_backups_votes_alone_and_double_vote_splits_them() -> None:
    c = cluster()
    pp = broadcast_pp(propose(c))
    backup_actions = c.replicas["n1"].step(MessageReceived("n0", pp), 100)
    assert byzantine(c, "n1", "equivocate").rewrite(backup_actions) == backup_actions
    out = byzantine(c, "n1", "double_vote").rewrite(backup_actions)
    sends = [(a.to, a.message) for a in out if isinstance(a, Send)]
    prepares = [m for _, m in sends if isinstance(m, Prepare)]
    assert len(prepares) == len(sends) == 3
    assert {to for to, _ in sends} == {"n0", "n2", "n3"}
    digests = {m.digest for m in prepares}
    assert len(digests) == 2 and pp.digest in digests
    assert all(signed_by(m, public(c, "n1")) for m in prepares)
    a, b = (next(m for m in prepares if m.digest == d) for d in digests)
    assert valid_evidence(payload("n1", a, b), c.config)


def test_mute_sends_nothing() -> None:
    c = cluster()
    actions = propose(c) + c.replicas["n0"].start(200)
    actions_raw: list[RawAction] = [*actions, SendRaw("n1", b"junk")]
    b = byzantine(c, "n0", "mute")
    out = b.rewrite(cast(list[Action], actions_raw))  # the runtime would not pass SendRaw
    assert any(isinstance(a, Send | Broadcast) for a in actions)
    assert not any(isinstance(a, Send | Broadcast | SendRaw) for a in out)
    assert out == [a for a in actions if not isinstance(a, Send | Broadcast)]


def test_silent_primary_proposes_nothing() -> None:
    c = cluster()
    actions = propose(c) + c.replicas["n0"].start(200)
    out = byzantine(c, "n0", "silent_primary").rewrite(actions)
    assert any(isinstance(m, PrePrepare) for m in outgoing(actions))
    assert not any(isinstance(m, PrePrepare) for m in outgoing(out))
    assert any(isinstance(m, Status) for m in outgoing(out))  # still heartbeats
    assert any(isinstance(a, Persist) for a in out)


def test_forged_signatures_do_not_verify() -> None:
    c = cluster()
    actions = propose(c) + c.replicas["n0"].start(200)
    out = byzantine(c, "n0", "forge").rewrite(actions)
    before, after = outgoing(actions), outgoing(out)
    assert len(before) == len(after) >= 2
    for honest, forged in zip(before, after, strict=True):
        assert signed_by(honest, public(c, "n0"))
        assert not signed_by(forged, public(c, "n0"))
        assert dataclasses.replace(forged, signature=honest.signature) == honest
    backup = c.replicas["n1"]
    pp = next(m for m in after if isinstance(m, PrePrepare))
    assert backup.step(MessageReceived("n0", pp), 100) == []
    assert backup.stats["bad_signature"] == 1


def test_invalid_block_proposes_a_batch_that_does_not_match_its_digest() -> None:
    c = cluster()
    actions = propose(c)
    out = byzantine(c, "n0", "invalid_block").rewrite(actions)
    lying = broadcast_pp(out)
    honest = broadcast_pp(actions)
    assert lying.batch is not None and honest.batch is not None
    assert lying.digest == honest.digest and lying.batch.digest != lying.digest
    assert signed_by(lying, public(c, "n0"))  # the signature omits the batch
    backup = c.replicas["n1"]
    assert backup.step(MessageReceived("n0", lying), 100) == []
    assert backup.stats["bad_pre_prepare"] == 1


def test_invalid_block_serves_blocks_with_wrong_state_roots() -> None:
    c = cluster()
    store = c.nodes["n0"].store
    block, _, _ = build_block(store.state, store.last_header, (a_transfer(c),), "n0", 1000)
    second, _, _ = build_block(store.state, block.header, (), "n0", 2000)
    served = byzantine(c, "n0", "invalid_block").serve(Blocks((block, second)))
    assert len(served.blocks) == 2
    for good, bad in zip((block, second), served.blocks, strict=True):
        assert bad.header.state_root != good.header.state_root
        same = dataclasses.replace(bad.header, state_root=good.header.state_root)
        assert same == good.header and bad.txs == good.txs and bad.proof == good.proof
    honest = Byzantine("n0", NODES, 1)
    honest.attach(c.replicas["n0"])
    blocks = Blocks((block,))
    assert honest.serve(blocks) == blocks


def test_flood_adds_garbage_only_with_a_heartbeat() -> None:
    c = cluster()
    b = byzantine(c, "n0", "flood", frames=3, bytes=16)
    actions = propose(c)
    assert b.rewrite(actions) == actions  # no Status among them
    heartbeat = c.replicas["n0"].start(200)
    out = b.rewrite(heartbeat)
    junk = [a for a in out if isinstance(a, SendRaw)]
    assert out[: len(heartbeat)] == heartbeat
    assert len(junk) == 9 and {a.to for a in junk} == PEERS_OF_N0
    assert all(len(a.data) == 16 and not a.unchecked for a in junk)
    assert len({a.data for a in junk}) == 9  # random, not one repeated frame


def test_oversize_flood_sends_one_unchecked_huge_frame_per_peer() -> None:
    c = cluster()
    b = byzantine(c, "n0", "flood", oversize=True)
    assert isinstance(next(iter(b.active.values())), Flood)
    junk = [a for a in b.rewrite(c.replicas["n0"].start(200)) if isinstance(a, SendRaw)]
    assert sorted(a.to for a in junk) == sorted(PEERS_OF_N0)
    assert all(a.unchecked and len(a.data) == 8 << 20 for a in junk)


def test_replay_resends_an_earlier_message() -> None:
    c = cluster()
    b = byzantine(c, "n1", "replay")
    old = vote(c, Prepare, "n1", D1, seq=1)
    new = vote(c, Prepare, "n1", D2, seq=2)
    status = sign(Status(0, True, 0, 0, 1, b""), key_of(c, "n1"))
    assert b.rewrite([Broadcast(status)]) == [Broadcast(status)]  # heartbeats are not kept
    assert b.rewrite([Broadcast(old)]) == [Broadcast(old)]  # nothing to replay yet
    assert b.rewrite([Broadcast(new)]) == [Broadcast(new), Broadcast(old)]
    again = b.rewrite([Broadcast(new)])
    assert again[0] == Broadcast(new) and again[1] in (Broadcast(old), Broadcast(new))
    sends: list[Action] = [Send("n2", new)]
    assert b.rewrite(sends) == sends  # only broadcasts are recorded and replayed


def test_removing_a_behaviour_restores_honesty() -> None:
    c = cluster()
    actions = propose(c)
    b = byzantine(c, "n0", "equivocate")
    assert isinstance(b.active["equivocate-1"], Equivocate)
    b.remove("equivocate-1")
    b.remove("not-there")
    assert b.rewrite(actions) == actions


# -- 5. Evidence -----------------------------------------------------------------------------


def test_two_votes_for_one_slot_with_different_digests_are_evidence() -> None:
    c = cluster()
    a, b = vote(c, Prepare, "n1", D1), vote(c, Prepare, "n1", D2)
    assert contradicts(a, b)
    assert valid_evidence(payload("n1", a, b), c.config)
    assert valid_evidence(payload("n1", b, a), c.config)
    commit = vote(c, Commit, "n2", D1, view=3, seq=9)
    other = vote(c, Prepare, "n2", D2, view=3, seq=9)
    assert valid_evidence(payload("n2", commit, other), c.config)


def test_a_pre_prepare_and_a_commit_that_contradict_it_are_evidence() -> None:
    c = cluster()
    pp = broadcast_pp(propose(c))
    commit = vote(c, Commit, "n0", D2, seq=pp.seq)
    assert valid_evidence(payload("n0", pp, commit), c.config)
    stripped = dataclasses.replace(pp, batch=None)  # the batch is not signed
    assert valid_evidence(payload("n0", stripped, commit), c.config)
    agreeing = vote(c, Commit, "n0", pp.digest, seq=pp.seq)
    assert not valid_evidence(payload("n0", pp, agreeing), c.config)


def test_votes_that_do_not_contradict_are_not_evidence() -> None:
    c = cluster()
    a = vote(c, Prepare, "n1", D1)
    cases = {
        "same digest": vote(c, Commit, "n1", D1),
        "same message": a,
        "other seq": vote(c, Prepare, "n1", D2, seq=2),
        "other view": vote(c, Prepare, "n1", D2, view=1),
        "other member": vote(c, Prepare, "n2", D2),
    }
    for name, b in cases.items():
        assert not valid_evidence(payload("n1", a, b), c.config), name


def test_evidence_needs_genuine_signatures_of_the_named_member() -> None:
    c = cluster()
    a, b = vote(c, Prepare, "n1", D1), vote(c, Prepare, "n1", D2)
    unsigned = dataclasses.replace(b, signature=bytes(64))
    by_other_key = sign(dataclasses.replace(b, signature=b""), key_of(c, "n2"))
    cases: dict[str, dict[str, Any]] = {
        "bad signature on b": payload("n1", a, unsigned),
        "bad signature on a": payload("n1", unsigned, a),
        "signed with another member's key": payload("n1", a, by_other_key),
        "member is not the signer": payload("n2", a, b),
        "member unknown": payload("n9", a, b),
        "member not a str": payload("n1", a, b) | {"member": 1},
        "undecodable a": payload("n1", b"\x00garbage", b),
        "undecodable b": payload("n1", a, b"\xff"),
        "truncated": payload("n1", a.encode()[:-3], b),
        "missing key": {"member": "n1", "a": a.encode()},
    }
    for name, p in cases.items():
        assert not valid_evidence(p, c.config), name
    assert valid_evidence(payload("n1", a, b), c.config)


def test_non_votes_are_not_evidence() -> None:
    c = cluster()
    k = key_of(c, "n1")
    s1, s2 = (sign(Status(0, True, h, 0, 1, b""), k) for h in (1, 2))
    c1, c2 = (sign(Checkpoint(4, d, d, 1, b""), k) for d in (D1, D2))
    assert not valid_evidence(payload("n1", s1, s2), c.config)
    assert not valid_evidence(payload("n1", c1, c2), c.config)
    assert not valid_evidence(payload("n1", c1, vote(c, Prepare, "n1", D2)), c.config)
    tx = a_transfer(c)
    assert not valid_evidence(payload("n1", tx, vote(c, Prepare, "n1", D2)), c.config)


@FEW
@given(st.binary(max_size=200), st.binary(max_size=200), st.sampled_from([*NODES, "x"]))
def test_valid_evidence_never_raises_on_junk(a: bytes, b: bytes, member: str) -> None:
    c = SimCluster(4, 1)
    assert valid_evidence({"member": member, "a": a, "b": b}, c.config) is False


def evidence_tx(c: SimCluster, nonce: int = 0, against: str = "n1", **override: Any) -> Tx:
    """Alice reports two contradicting prepares of `against`; `override` mangles the payload."""
    a, b = vote(c, Prepare, against, D1), vote(c, Prepare, against, D2)
    p = payload(against, a, b) | override
    return Tx.create(c.accounts["alice"], c.genesis.chain_id, nonce, EVIDENCE, p)


def test_evidence_tx_helper_and_stateless_checks() -> None:
    c = cluster()
    a, b = vote(c, Prepare, "n1", D1), vote(c, Prepare, "n1", D2)
    tx = evidence(c.accounts["alice"], c.genesis.chain_id, 0, "n1", a.encode(), b.encode())
    assert tx.kind == EVIDENCE and tx.payload == payload("n1", a, b)
    tx.check_stateless(c.genesis.chain_id)
    assert valid_evidence(tx.payload, c.config)


@pytest.mark.parametrize(
    "override",
    [
        {"extra": 1},
        {"member": 3},
        {"member": b"n1"},
        {"a": "not bytes"},
        {"a": b""},
        {"b": b"x" * (MAX_EVIDENCE_BYTES + 1)},
        {"b": None},
    ],
    ids=repr,
)
def test_malformed_evidence_payloads_are_refused(override: dict[str, Any]) -> None:
    c = cluster()
    tx = evidence_tx(c, **override)
    with pytest.raises(MalformedTx):
        tx.check_stateless(c.genesis.chain_id)
    state = State.from_genesis(c.genesis, chain_engines())
    after, receipts = apply_txs(state, [tx])
    assert receipts[0].reason == MALFORMED and after.root() == state.root()


def test_evidence_payload_missing_a_key_is_refused() -> None:
    c = cluster()
    a = vote(c, Prepare, "n1", D1)
    tx = Tx.create(
        c.accounts["alice"], c.genesis.chain_id, 0, EVIDENCE, {"member": "n1", "a": a.encode()}
    )
    with pytest.raises(MalformedTx):
        tx.check_stateless(c.genesis.chain_id)


def test_an_evidence_tx_applies_bumps_the_nonce_and_moves_no_funds() -> None:
    c = cluster()
    state = State.from_genesis(c.genesis, chain_engines())
    alice = c.accounts["alice"].address
    after, receipts = apply_txs(state, [evidence_tx(c, 0), evidence_tx(c, 1, against="n2")])
    assert [r.reason for r in receipts] == [OK, OK] and receipts[0].ok
    assert after.account(alice).nonce == 2
    assert after.account(alice).balance == state.account(alice).balance
    assert {a: x.balance for a, x in after.accounts.items()} == {
        a: x.balance for a, x in state.accounts.items()
    }
    assert after.total_supply() == state.total_supply()
    _, late = apply_txs(state, [evidence_tx(c, 5)])
    assert late[0].reason == BAD_NONCE


def test_evidence_from_an_account_without_funds_still_applies() -> None:
    c = cluster()
    key = key_of(c, "n3")  # a replica reports evidence with its own (empty) account
    a, b = vote(c, Prepare, "n1", D1), vote(c, Prepare, "n1", D2)
    tx = evidence(key, c.genesis.chain_id, 0, "n1", a.encode(), b.encode())
    state = State.from_genesis(c.genesis, chain_engines())
    after, receipts = apply_txs(state, [tx])
    assert receipts[0].ok
    assert after.account(key.address).nonce == 1 and after.account(key.address).balance == 0
    assert after.total_supply() == state.total_supply()


def test_store_returns_committed_evidence_filtered_by_member() -> None:
    c = cluster()
    store = Store(":memory:", c.genesis, engines=chain_engines())
    txs = (
        evidence_tx(c, 0, against="n1"),
        a_transfer(c, 1),
        evidence_tx(c, 7, against="n3"),  # bad nonce: included, but not evidence
        evidence_tx(c, 2, against="n2"),
    )
    block, state, receipts = build_block(store.state, store.last_header, txs, "n0", 1000)
    assert [r.reason for r in receipts] == [OK, OK, BAD_NONCE, OK]
    store.append(block, receipts, state)
    second = (evidence_tx(c, 3, against="n1"),)
    block2, state2, receipts2 = build_block(state, block.header, second, "n1", 2000)
    store.append(block2, receipts2, state2)
    everything = store.evidence()
    assert [(r.height, r.index, r.tx.payload["member"]) for r in everything] == [
        (1, 0, "n1"),
        (1, 3, "n2"),
        (2, 0, "n1"),
    ]
    assert all(r.reason == OK and r.tx.kind == EVIDENCE for r in everything)
    assert everything[0].tx == txs[0]
    assert [(r.height, r.index) for r in store.evidence("n1")] == [(1, 0), (2, 0)]
    assert [r.tx for r in store.evidence("n2")] == [txs[3]]
    assert store.evidence("n3") == [] and store.evidence("n0") == []
    store.close()


# -- 6. faultcmd.compare ---------------------------------------------------------------------


def test_compare_identical_chains() -> None:
    chain = ["a", "b", "c"]
    assert compare({"n0": chain, "n1": list(chain)}) == {"common_prefix": 3, "divergence": None}
    assert compare({}) == {"common_prefix": 0, "divergence": None}
    assert compare({"n0": [], "n1": chain}) == {"common_prefix": 0, "divergence": None}


def test_compare_shorter_nodes_that_agree_are_not_a_divergence() -> None:
    got = compare({"n0": ["a", "b", "c", "d"], "n1": ["a", "b"], "n2": ["a", "b", "c"]})
    assert got == {"common_prefix": 2, "divergence": None}


def test_compare_finds_a_fork() -> None:
    got = compare({"n0": ["a", "b", "c"], "n1": ["a", "x", "y"], "n2": ["a", "b"]})
    assert got == {
        "common_prefix": 1,
        "divergence": {"height": 2, "hashes": {"n0": "b", "n1": "x", "n2": "b"}},
    }


def test_compare_fork_above_a_short_node() -> None:
    got = compare({"n0": ["a", "b", "c"], "n1": ["a", "b", "z", "w"], "n2": ["a"]})
    assert got == {
        "common_prefix": 1,
        "divergence": {"height": 3, "hashes": {"n0": "c", "n1": "z"}},
    }


@FEW
@given(
    st.lists(st.text("0123456789abcdef", min_size=4, max_size=4), max_size=12, unique=True),
    st.lists(st.integers(0, 12), min_size=1, max_size=5),
    st.data(),
)
def test_compare_prefixes_and_forks(
    base: list[str], lengths: list[int], data: st.DataObject
) -> None:
    chains = {f"n{i}": base[: min(n, len(base))] for i, n in enumerate(lengths)}
    shortest = min(len(h) for h in chains.values())
    assert compare(chains) == {"common_prefix": shortest, "divergence": None}
    forkable = [nid for nid, h in chains.items() if h]
    if len(forkable) < 2:
        return
    nid = data.draw(st.sampled_from(forkable))
    at = data.draw(st.integers(1, len(chains[nid])))
    others = [h for other, h in chains.items() if other != nid and len(h) >= at]
    chains[nid] = [*chains[nid][: at - 1], "fork", *chains[nid][at:]]
    result = compare(chains)
    if not others:  # nobody else reaches that height: nothing to disagree with
        assert result["divergence"] is None
        return
    assert result["divergence"]["height"] == at
    assert result["divergence"]["hashes"][nid] == "fork"
    assert result["common_prefix"] == min(shortest, at - 1)
