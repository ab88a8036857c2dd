"""`tally fault inject|heal|list` and `tally check`: faults on a live cluster, and the verdict."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from typing import Any

from rich.table import Table

from node.cli.output import console
from node.cluster import launcher
from node.cluster.config import ClusterConfig, ConfigError
from node.faults.spec import CATALOGUE, FaultError, FaultSpec
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError


def add_fault_arguments(sub: Any, common: argparse.ArgumentParser) -> None:
    fault = sub.add_parser("fault", help="inject, heal and list faults on the live cluster")
    actions = fault.add_subparsers(dest="fault_action", required=True, metavar="ACTION")
    inject = actions.add_parser(
        "inject",
        parents=[common],
        help="start a fault now (or at a time or height)",
        description="Kinds: " + ", ".join(f"{k} ({v.category})" for k, v in CATALOGUE.items()),
    )
    inject.add_argument("kind", choices=sorted(CATALOGUE))
    inject.add_argument("--node", default="*", help="node id, or * for every node (default)")
    inject.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the kind (repeatable); see the README",
    )
    inject.add_argument("--duration", type=float, help="seconds until it heals by itself")
    inject.add_argument("--at", type=float, help="start this many seconds from now")
    inject.add_argument("--height", type=int, help="start when the node reaches this height")
    heal = actions.add_parser("heal", parents=[common], help="end faults (all, or one --id)")
    heal.add_argument("--node", default="*")
    heal.add_argument("--id", help="the fault id that `tally fault list` shows")
    listing = actions.add_parser("list", parents=[common], help="faults active on each node")
    listing.add_argument("--json", action="store_true")
    for p in (inject, heal):
        p.add_argument("--json", action="store_true")


def spec_from(args: argparse.Namespace) -> FaultSpec:
    data: dict[str, Any] = {"kind": args.kind, "node": args.node, "params": {}}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise FaultError(f"--param {item!r}: expected NAME=VALUE")
        data["params"][name] = FaultSpec.parse(f"kind={args.kind},{name}={value}").params[name]
    for key, value in (
        ("duration_seconds", args.duration),
        ("at_seconds", args.at),
        ("at_height", args.height),
    ):
        if value is not None:
            data[key] = value
    return FaultSpec.from_dict(data)


def token(cfg: ClusterConfig) -> str:
    try:
        return cfg.admin_token_path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no admin token at {cfg.admin_token_path}: start the cluster with `tally up`"
        ) from None


async def on_nodes(
    cfg: ClusterConfig, target: str, method: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Call an admin method on one node or all; per node, the result or the error text."""
    ids = cfg.node_ids() if target == "*" else [cfg.node(target).id]

    async def one(nid: str) -> Any:
        try:
            async with RpcClient(cfg.node(nid).rpc_url, timeout=5, token=token(cfg)) as client:
                return await client.call(method, **(params or {}))
        except (RpcUnavailable, RpcError) as e:
            return {"error": str(e)}

    return dict(zip(ids, await asyncio.gather(*(one(n) for n in ids)), strict=True))


def cmd_fault(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    if args.fault_action == "inject":
        spec = spec_from(args)
        result = (
            inject_process(cfg, spec)
            if spec.category == "process" or spec.kind == "twins"
            else asyncio.run(on_nodes(cfg, spec.node, "fault_inject", spec.to_dict()))
        )
    elif args.fault_action == "heal":
        processes = {} if args.id else heal_processes(cfg, args.node)
        result = asyncio.run(on_nodes(cfg, args.node, "fault_heal", {"id": args.id}))
        result |= processes
    else:
        result = asyncio.run(on_nodes(cfg, "*", "fault_list"))
        for nid in cfg.node_ids():
            result[nid]["paused"] = launcher.is_paused(cfg, nid)
            result[nid]["twin"] = launcher.running_pid(cfg, f"{nid}-twin") is not None
    print(json.dumps(result, indent=2)) if args.json else render(result)
    failed = [r for r in result.values() if isinstance(r, dict) and "error" in r]
    return 1 if failed else 0


def inject_process(cfg: ClusterConfig, spec: FaultSpec) -> dict[str, Any]:
    """Process faults are the launcher's: signals to the recorded PIDs, or a twin process."""
    if spec.at_seconds or spec.at_height:
        raise FaultError("schedule process faults in cluster.toml; here they start now")
    ids = cfg.node_ids() if spec.node == "*" else [cfg.node(spec.node).id]
    done: dict[str, Any] = {}
    for nid in ids:
        try:
            if spec.kind == "kill":
                done[nid] = {"killed": launcher.kill_node(cfg, nid)}
            elif spec.kind == "pause":
                done[nid] = {"paused": launcher.signal_node(cfg, nid, signal.SIGSTOP)}
            elif spec.kind == "restart":
                launcher.kill_node(cfg, nid)
                done[nid] = {"restarted": launcher.up(cfg, nodes=[nid]).get(nid)}
            else:
                done[nid] = {"twin": launcher.start_twin(cfg, nid)}
        except launcher.LaunchError as e:
            done[nid] = {"error": str(e)}
    if spec.duration_seconds is not None:
        later(cfg, spec)
    return done


def later(cfg: ClusterConfig, spec: FaultSpec) -> None:
    """End a process fault after its duration, in a detached helper."""
    code = (
        "import time; from node.cluster.config import load_config; from node.faults.spec import "
        "FaultSpec; from node.cluster.supervisor import undo; "
        f"time.sleep({spec.duration_seconds}); "
        f"undo(load_config({str(cfg.path)!r}), FaultSpec.from_dict({spec.to_dict()!r}))"
    )
    subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def heal_processes(cfg: ClusterConfig, node: str) -> dict[str, Any]:
    """Resume paused nodes, stop twins, and start again nodes that were killed: each on its
    own, so a node that fails to start is reported and stops no other."""
    healed: dict[str, Any] = {}
    ids = cfg.node_ids() if node == "*" else [node]
    for nid in [n for n in ids if launcher.running_pid(cfg, n) is None]:
        try:
            healed[f"{nid} (process)"] = {"restarted": launcher.up(cfg, nodes=[nid])[nid]}
        except launcher.LaunchError as e:
            healed[f"{nid} (process)"] = {"error": str(e)}
    for nid in ids:
        if launcher.is_paused(cfg, nid):
            launcher.signal_node(cfg, nid, signal.SIGCONT)
            healed[f"{nid} (process)"] = {"resumed": True}
        if launcher.running_pid(cfg, f"{nid}-twin") is not None:
            launcher.kill_node(cfg, f"{nid}-twin")
            healed[f"{nid} (process)"] = {"twin stopped": True}
    return healed


def render(result: dict[str, Any]) -> None:
    for nid, r in result.items():
        if isinstance(r, dict) and "faults" in r:
            rows = r["faults"] or [{"kind": "none"}]
            extra = " [yellow](paused)[/]" if r.get("paused") else ""
            extra += " [yellow](twin running)[/]" if r.get("twin") else ""
            console.print(f"{nid}{extra}: " + "; ".join(_fault_line(f) for f in rows))
        else:
            console.print(f"{nid}: {r}")


def _fault_line(f: dict[str, Any]) -> str:
    if f["kind"] == "none":
        return "no faults"
    params = ", ".join(f"{k}={v}" for k, v in f.get("params", {}).items())
    return f"{f.get('id')} {f['kind']}({params}) {f.get('state')}"


# -- tally check -------------------------------------------------------------------------------


async def gather_check(cfg: ClusterConfig) -> dict[str, Any]:
    async def status(url: str) -> Any:
        try:
            async with RpcClient(url, timeout=5) as client:
                return await client.call("status")
        except (RpcUnavailable, RpcError) as e:
            return {"error": str(e)}

    statuses = dict(
        zip(
            cfg.node_ids(),
            await asyncio.gather(*(status(n.rpc_url) for n in cfg.nodes)),
            strict=True,
        )
    )
    up = {nid: s for nid, s in statuses.items() if "error" not in s}
    # Under proof of work only blocks k deep are final: nodes must agree on those.
    upto = {nid: s.get("final_height", s["height"]) for nid, s in up.items()}
    hashes = {nid: await chain(cfg.node(nid).rpc_url, upto[nid]) for nid in up}
    evidence: dict[str, Any] = {}
    for nid in up:
        async with RpcClient(cfg.node(nid).rpc_url, timeout=10) as client:
            for e in await client.call("get_evidence"):
                evidence.setdefault(e["tx_id"], e)
    return {"nodes": statuses, **compare(hashes), "evidence": list(evidence.values())}


async def chain(url: str, height: int) -> list[str]:
    out: list[str] = []
    async with RpcClient(url, timeout=30) as client:
        for first in range(1, height + 1, 1000):
            out += (await client.call("block_hashes", first=first, last=height))["hashes"]
    return out


def compare(hashes: dict[str, list[str]]) -> dict[str, Any]:
    """The longest prefix every node shares, and the first height where two nodes differ."""
    common = 0
    for height in range(1, max((len(h) for h in hashes.values()), default=0) + 1):
        seen = {nid: h[height - 1] for nid, h in hashes.items() if len(h) >= height}
        if len(set(seen.values())) > 1:
            return {"common_prefix": common, "divergence": {"height": height, "hashes": seen}}
        if len(seen) == len(hashes):
            common = height
    return {"common_prefix": common, "divergence": None}


def cmd_check(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    report = asyncio.run(gather_check(cfg))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render_check(report)
    if report["divergence"]:
        return 1
    return 2 if any("error" in s for s in report["nodes"].values()) else 0


def render_check(report: dict[str, Any]) -> None:
    table = Table(title="tally check")
    for col in ("node", "height", "final", "view", "primary", "last hash"):
        table.add_column(col)
    for nid, s in report["nodes"].items():
        if "error" in s:
            table.add_row(nid, "[red]unreachable[/]", "", "", "", s["error"][:50])
        else:
            table.add_row(
                nid,
                str(s["height"]),
                str(s.get("final_height", s["height"])),
                str(s.get("view", "")),
                s.get("primary", ""),
                s["last_block_hash"][:12],
            )
    console.print(table)
    console.print(
        f"common prefix: every reachable node agrees up to height {report['common_prefix']}"
        " (final blocks only)"
    )
    d = report["divergence"]
    if d:
        shown = ", ".join(f"{n}={h[:12]}" for n, h in d["hashes"].items())
        console.print(
            f"[red]SAFETY VIOLATION[/]: nodes commit different blocks at height "
            f"{d['height']}: {shown}"
        )
    else:
        console.print("[green]no divergence[/]")
    by_slot: dict[tuple[str, Any, Any], list[dict[str, Any]]] = {}
    for e in report["evidence"]:  # every honest witness may report the same equivocation
        by_slot.setdefault((e["member"], e["a"].get("view"), e["a"].get("seq")), []).append(e)
    for (member, view, seq), items in by_slot.items():
        e = items[0]
        digests = sorted({e["a"].get("digest", "")[:12], e["b"].get("digest", "")[:12]})
        console.print(
            f"evidence at height {e['height']}: {member} signed {e['a']['kind']} and "
            f"{e['b']['kind']} for view {view} seq {seq} with digests {' and '.join(digests)} "
            f"(reported {len(items)}x)"
        )
    if not report["evidence"]:
        console.print("evidence: none")
