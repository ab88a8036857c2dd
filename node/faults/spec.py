"""The fault catalogue and the one description of a fault used everywhere.

The same `FaultSpec` comes from a cluster.toml `[[fault]]` entry, from the
`fault_inject` admin RPC, from `tally fault inject`, and from `tally sim --fault`,
so a scenario seen on a live cluster can be replayed in the simulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Category = Literal["network", "process", "byzantine"]


@dataclass(frozen=True)
class Kind:
    category: Category
    params: dict[str, Any]  # name -> default (its type is the default's type)
    shows: str  # what it demonstrates


CATALOGUE: dict[str, Kind] = {
    # network: applied to the node's own traffic, in and out, inside its transport
    "drop": Kind("network", {"probability": 0.2}, "lost messages; PBFT retransmits"),
    "delay": Kind("network", {"ms": 100, "jitter_ms": 50}, "slow links; latency, not safety"),
    "duplicate": Kind("network", {"probability": 0.2}, "duplicates are discarded"),
    "reorder": Kind("network", {"probability": 0.3, "window_ms": 50}, "out-of-order delivery"),
    "partition": Kind(
        "network", {"groups": ""}, "'n0,n1|n2,n3': minorities stall, majorities go on"
    ),
    "isolate": Kind("network", {}, "one node cut off; it catches up after heal"),
    # process: applied by the launcher (live) or the simulator
    "kill": Kind("process", {}, "SIGKILL; the others continue, a restart recovers from disk"),
    "pause": Kind("process", {}, "SIGSTOP then SIGCONT: a node frozen in time"),
    "restart": Kind("process", {}, "kill -9 and start again: crash recovery"),
    # byzantine: rewrite the node's action stream; its honest code runs unchanged
    "equivocate": Kind(
        "byzantine", {"colluders": ""}, "a primary sends conflicting pre-prepares to two halves"
    ),
    "double_vote": Kind(
        "byzantine", {"colluders": ""}, "conflicting prepares/commits to two halves"
    ),
    "mute": Kind("byzantine", {}, "a replica that sends nothing"),
    "silent_primary": Kind("byzantine", {}, "a primary that proposes nothing: view change"),
    "forge": Kind("byzantine", {}, "every signature it sends is forged: all rejected"),
    "replay": Kind("byzantine", {}, "stale messages from old views and sequence numbers"),
    "invalid_block": Kind(
        "byzantine", {}, "batches that do not match their digest; blocks with a bad state root"
    ),
    "flood": Kind(
        "byzantine",
        {"frames": 20, "bytes": 1024, "oversize": False},
        "garbage (or oversize) frames to every peer each heartbeat",
    ),
    "twins": Kind("byzantine", {}, "two processes with one key"),
    # proof of work: what a miner publishes (and hears) is rewritten
    "withhold": Kind("byzantine", {}, "a miner that never publishes its blocks: wasted work"),
    "selfish_mine": Kind(
        "byzantine", {}, "Eyal-Sirer selfish mining: private blocks released to win races"
    ),
    "double_spend": Kind(
        "byzantine",
        {"tx": "", "confirmations": 6, "give_up": 20},
        "a private fork without the payment `tx`, released once it has k confirmations",
    ),
}
POW_ONLY = frozenset({"withhold", "selfish_mine", "double_spend"})


class FaultError(ValueError):
    """A fault description that names an unknown kind or parameter, or a bad value."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    node: str = "*"  # a node id, or "*" for every node
    params: dict[str, Any] = field(default_factory=dict)
    at_seconds: float | None = None
    at_height: int | None = None
    duration_seconds: float | None = None
    id: str = ""

    @property
    def category(self) -> Category:
        return CATALOGUE[self.kind].category

    def param(self, name: str) -> Any:
        return self.params.get(name, CATALOGUE[self.kind].params[name])

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FaultSpec:
        data = dict(raw)
        kind = data.pop("kind", None)
        if kind not in CATALOGUE:
            raise FaultError(f"unknown fault kind {kind!r}; known: {', '.join(CATALOGUE)}")
        spec = cls(
            kind=kind,
            node=str(data.pop("node", "*")),
            at_seconds=_number(data.pop("at_seconds", None), "at_seconds"),
            at_height=_opt_int(data.pop("at_height", None), "at_height"),
            duration_seconds=_number(data.pop("duration_seconds", None), "duration_seconds"),
            id=str(data.pop("id", "")),
            params=_params(kind, data.pop("params", {}) | data),
        )
        return spec

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """'kind=drop,node=n1,probability=0.3,at=2,duration=5' (the CLI form)."""
        aliases = {"at": "at_seconds", "height": "at_height", "duration": "duration_seconds"}
        raw: dict[str, str] = {}
        # split at commas that start a new key=value pair: 'groups=n0,n1|n2,n3' stays whole
        for part in filter(None, re.split(r",(?=\s*\w+=)", text)):
            key, sep, value = part.partition("=")
            if not sep:
                raise FaultError(f"bad fault {text!r}: expected key=value pairs")
            raw[aliases.get(key.strip(), key.strip())] = value.strip()
        kind = CATALOGUE.get(raw.get("kind", ""))
        texts = {"kind", "node"} | {
            k for k, v in (kind.params if kind else {}).items() if isinstance(v, str)
        }
        # text parameters stay as written: a tx id of digits is not a number
        data = {k: v if k in texts else _scalar(v) for k, v in raw.items()}
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "node": self.node, "params": dict(self.params)}
        for name in ("at_seconds", "at_height", "duration_seconds"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.id:
            out["id"] = self.id
        return out

    def describe(self) -> str:
        """The CLI form, for `tally sim --fault`."""
        parts = [f"kind={self.kind}", f"node={self.node}"]
        parts += [
            f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.params.items()
        ]
        for name, alias in (
            ("at_seconds", "at"),
            ("at_height", "height"),
            ("duration_seconds", "duration"),
        ):
            if getattr(self, name) is not None:
                parts.append(f"{alias}={getattr(self, name)}")
        return ",".join(parts)


def _params(kind: str, given: dict[str, Any]) -> dict[str, Any]:
    known = CATALOGUE[kind].params
    out = {}
    for name, value in given.items():
        if name not in known:
            hint = f"; it takes {', '.join(known)}" if known else "; it takes none"
            raise FaultError(f"{kind} has no parameter {name!r}{hint}")
        default = known[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise FaultError(f"{kind}.{name} must be true or false")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultError(f"{kind}.{name} must be a number")
            value = float(value)
            if name == "probability" and not 0 <= value <= 1:
                raise FaultError(f"{kind}.probability must be between 0 and 1")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FaultError(f"{kind}.{name} must be a non-negative integer")
        elif not isinstance(value, str):
            value = str(value)
        out[name] = value
    return out


def _scalar(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f"{name} must be a non-negative number of seconds")
    return float(value)


def _opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultError(f"{name} must be a non-negative integer")
    return value
