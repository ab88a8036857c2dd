"""`tally`: run and inspect a local Tally cluster.

Every command reads the cluster description from -c/--config (default
./cluster.toml).  Commands that print data take --json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from rich.table import Table
from rich.text import Text

from ledger.tx import transfer
from node.audit.verify import verify_node
from node.bench.pbft import add_pbft_arguments
from node.cli.contract import add_contract_arguments, cmd_contract
from node.cli.dashboard import add_dashboard_arguments, cmd_dashboard
from node.cli.design import add_design_arguments, cmd_design
from node.cli.fault import add_fault_arguments, cmd_check, cmd_fault
from node.cli.output import console, emit, err
from node.cli.query import add_query_arguments, cmd_query
from node.cli.status import all_status, render_status
from node.cli.watch import add_watch_arguments, cmd_watch
from node.cluster import broker, launcher
from node.cluster.accounts import account_key, resolve_address
from node.cluster.bootstrap import ensure_initialized, load_genesis, pow_config
from node.cluster.config import ClusterConfig, ConfigError, load_config
from node.cluster.tlscerts import ensure_tls
from node.faults.spec import FaultError
from node.rpc.client import RpcUnavailable
from node.rpc.failover import FailoverClient
from node.rpc.jsonrpc import RpcError
from node.sim.command import add_sim_arguments, run_sim_command

# -- cluster lifecycle -----------------------------------------------------------------------


def cmd_up(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    if args.fresh:
        if args.node:
            raise launcher.LaunchError("--fresh wipes the whole cluster: not with --node")
        wipe(cfg)
    started = launcher.up(cfg, timeout_s=args.timeout, nodes=args.node)
    if cfg.transport == "mqtt":
        where = broker.address(cfg)
        scheme = "mqtts" if where.tls else "mqtt"
        how = f"started (pid {started['broker']})" if "broker" in started else "running"
        if not cfg.mqtt.spawn:
            how = "external"
        console.print(f"broker: {how}, {scheme}://{where.host}:{where.port}/{cfg.topic_prefix}")
    for node in cfg.nodes if args.node is None else [cfg.node(n) for n in args.node]:
        how = f"started (pid {started[node.id]})" if node.id in started else "already running"
        console.print(f"{node.id}: {how}, rpc {node.rpc_url}")
    what = f"cluster {cfg.name!r}" if args.node is None else ", ".join(args.node)
    console.print(f"[green]{what} is up[/]; logs in {cfg.data_dir / 'logs'}")
    return 0


def cmd_restart(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    stopped, pid = launcher.restart(cfg, args.node_id, grace_s=args.grace, timeout_s=args.timeout)
    was = f"pid {stopped.pid} {stopped.how}" if stopped.pid else "was not running"
    node = cfg.node(args.node_id)
    console.print(f"{node.id}: {was}; started (pid {pid}), answering on {node.rpc_url}")
    return 0


def cmd_keys(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    """Make what `tally up` would make on first start, without starting anything."""
    genesis = ensure_initialized(cfg)
    made = ensure_tls(cfg) if cfg.transport == "mqtt" and cfg.mqtt.tls and cfg.mqtt.spawn else []
    table = Table(title=f"keys of {cfg.name!r} (chain {genesis.chain_id})")
    for col in ("what", "path"):
        table.add_column(col)
    for n in cfg.nodes:
        table.add_row(f"node key {n.id}", str(cfg.node_key_path(n.id)))
    for name in cfg.accounts:
        table.add_row(f"account key {name}", str(cfg.account_key_path(name)))
    if cfg.transport == "mqtt" and cfg.mqtt.tls:
        ca, _, _ = cfg.tls_paths(cfg.nodes[0].id)
        table.add_row("broker CA", str(ca))
        for n in cfg.nodes:
            _, cert, key = cfg.tls_paths(n.id)
            table.add_row(f"TLS client {n.id}", f"{cert} / {key}")
    console.print(table)
    if made:
        console.print(f"made {len(made)} TLS certificate(s) in {cfg.tls_dir}")
    return 0


def wipe(cfg: ClusterConfig) -> None:
    import shutil

    launcher.down(cfg)
    if cfg.data_dir.exists():
        shutil.rmtree(cfg.data_dir)


def cmd_down(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    stopped = launcher.down(cfg)
    for s in stopped:
        console.print(f"{s.node_id}: pid {s.pid} {s.how}")
    if not stopped:
        console.print("no node of this cluster was running")
    return 0


# -- inspection ------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    rows = asyncio.run(all_status(cfg))
    emit(args, rows, render_status)
    return 2 if any("error" in r for r in rows) else 0


def cmd_transfer(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    genesis = load_genesis(cfg)
    key = account_key(cfg, args.sender)
    to = resolve_address(cfg, args.to)

    async def go() -> dict[str, Any]:
        async with FailoverClient(cfg.rpc_members(args.node), timeout=40.0) as client:
            account = await client.call("get_account", address=key.address.hex())
            tx = transfer(key, genesis.chain_id, account["next_nonce"], to, args.amount)
            params: dict[str, Any] = {"tx": tx.encode().hex()}
            if args.wait:
                params["wait"] = "commit"
            result: dict[str, Any] = await client.call("submit_tx", **params)
            return result

    result = asyncio.run(go())
    emit(
        args,
        result,
        lambda r: console.print(
            f"tx {r['tx_id']}: {r['status']}"
            + (f" at height {r['height']}" if "height" in r else "")
        ),
    )
    return 0 if result["status"] in ("ok", "pending") else 1


def cmd_verify(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    genesis = load_genesis(cfg)
    nodes = [cfg.node(args.node)] if args.node else list(cfg.nodes)

    async def go() -> list[dict[str, Any]]:
        pow = pow_config(cfg, genesis) if cfg.consensus == "pow" else None
        reports = await asyncio.gather(*(verify_node(n.id, n.rpc_url, genesis, pow) for n in nodes))
        return [asdict(r) for r in reports]

    reports = asyncio.run(go())

    def render(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            if r["ok"]:
                console.print(
                    f"[green]{r['node_id']}: chain valid[/] to height {r['height']} "
                    f"({r['txs']} txs, hash {r['last_hash'][:16]}, supply {r['total_supply']})"
                )
            else:
                console.print(
                    f"[red]{r['node_id']}: INVALID at height {r['height']}[/]: {r['error']}"
                )

    emit(args, reports, render)
    return 0 if all(r["ok"] for r in reports) else 1


def cmd_demo(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    from node.cli.demo import run_demo

    return run_demo(cfg, txs_per_account=args.txs, keep_up=args.keep_up)


def cmd_sim(args: argparse.Namespace, cfg: ClusterConfig | None) -> int:
    return run_sim_command(args)


# `tally bench NAME` -> (module, function); imported on use, so other commands start fast.
BENCHES = {
    "pbft": ("node.bench.pbft", "run_pbft_bench"),
    "transport": ("node.bench.pbft", "run_pbft_bench"),
    "memory": ("node.bench.pbft", "run_memory_bench"),
    "siglimit": ("node.bench.pbft", "run_siglimit_bench"),
    "pow": ("node.bench.pow", "run_pow_bench"),
    "double-spend": ("node.bench.pow", "run_double_spend_bench"),
    "risk-design": ("node.bench.design", "run_design_bench"),
    "contracts": ("node.bench.contracts", "run_contract_bench"),
    "replay": ("node.bench.replay", "run_replay_bench"),
    "state": ("node.bench.state", "run_state_bench"),
    "sim": ("node.bench.sim", "run_sim_bench"),
    "integrity": ("node.bench.integrity", "run_integrity_bench"),
    "suite": ("node.bench.suite", "run_suite"),
}


def cmd_bench(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    if args.bench == "transport":
        args.transport = "mqtt"  # measured beside TCP
    module, function = BENCHES[args.bench]
    run: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
    return run(args)


# -- argument parsing ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tally", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "-c", "--config", default="cluster.toml", help="cluster file (default: %(default)s)"
    )
    # -c also works after the command: `tally status -c other.toml`
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="cluster file")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[..., int], help_: str, json_: bool = False
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common])
        sp.set_defaults(fn=fn)
        if json_:
            sp.add_argument("--json", action="store_true", help="print JSON")
        return sp

    up = add(
        "up",
        cmd_up,
        "start the nodes that are not running (keys and genesis are made on first start); "
        "if one fails to start, only what this start began is stopped",
    )
    up.add_argument("--fresh", action="store_true", help="stop it and delete data_dir first")
    up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for health")
    up.add_argument(
        "--node",
        action="append",
        metavar="ID",
        help="start only this node (repeatable); the others are left as they are",
    )
    rs = add(
        "restart",
        cmd_restart,
        "stop one node (SIGTERM, then SIGKILL after --grace), start it, wait until it answers",
    )
    rs.add_argument("node_id", metavar="NODE", help="the node's id, e.g. n1")
    rs.add_argument("--grace", type=float, default=5.0, help="seconds before SIGKILL (default 5)")
    rs.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for health")
    add("down", cmd_down, "stop exactly the processes `up` started (nodes, then the broker)")
    add(
        "keys",
        cmd_keys,
        "make node and account keys, genesis and, for MQTT with TLS, the certificates",
    )
    add("status", cmd_status, "one row per node: role, height, view, last hash", json_=True)

    tx = sub.add_parser("tx", help="submit a signed transaction").add_subparsers(
        dest="tx_kind", required=True, metavar="KIND"
    )
    tr = tx.add_parser("transfer", help="move funds between accounts", parents=[common])
    tr.set_defaults(fn=cmd_transfer)
    tr.add_argument("--from", dest="sender", required=True, help="account name (key in data_dir)")
    tr.add_argument("--to", required=True, help="account name or 40-hex-digit address")
    tr.add_argument("--amount", type=int, required=True)
    tr.add_argument("--wait", action="store_true", help="wait until committed")
    tr.add_argument("--node", help="node to submit to (default: the first that answers)")
    tr.add_argument("--json", action="store_true", help="print JSON")

    add_query_arguments(sub, common).set_defaults(fn=cmd_query)

    v = add("verify", cmd_verify, "check a node's whole chain from genesis", json_=True)
    v.add_argument("--node", help="only this node (default: every node)")

    d = add("demo", cmd_demo, "bring the cluster up, run signed transfers, show agreement, stop")
    d.add_argument("--txs", type=int, default=1000, help="transfers per account (default: 1000)")
    d.add_argument("--keep-up", action="store_true", help="leave the cluster running")

    add(
        "check",
        cmd_check,
        "compare every node's chain: common prefix, divergence, evidence",
        json_=True,
    )
    add_fault_arguments(sub, common)
    sub.choices["fault"].set_defaults(fn=cmd_fault)

    add_contract_arguments(sub, common)
    sub.choices["contract"].set_defaults(fn=cmd_contract)
    add_watch_arguments(sub, common).set_defaults(fn=cmd_watch)
    add_dashboard_arguments(sub, common).set_defaults(fn=cmd_dashboard)
    add_design_arguments(sub)
    sub.choices["design"].set_defaults(fn=cmd_design)

    sim = sub.add_parser(
        "sim",
        help="run the deterministic simulator (faults from flags or a seed)",
        description="Run replicas in one process on a virtual clock, with seeded faults, "
        "and check agreement, validity, integrity and liveness.",
    )
    sim.set_defaults(fn=cmd_sim)
    add_sim_arguments(sim)

    b = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    bp = b.add_parser("pbft", help="PBFT throughput and latency with real processes")
    bp.set_defaults(fn=cmd_bench)
    add_pbft_arguments(bp)
    from node.bench.design import add_design_bench_arguments
    from node.bench.pow import add_double_spend_arguments, add_pow_bench_arguments

    bw = b.add_parser("pow", help="proof of work: block interval after retargeting, live")
    bw.set_defaults(fn=cmd_bench)
    add_pow_bench_arguments(bw)
    bs = b.add_parser(
        "double-spend", help="simulated private-fork double spends beside Nakamoto's analysis"
    )
    bs.set_defaults(fn=cmd_bench)
    add_double_spend_arguments(bs)
    bd = b.add_parser("risk-design", help="time to design a multiperiod risk-sharing program")
    bd.set_defaults(fn=cmd_bench)
    add_design_bench_arguments(bd)
    _add_suite_benches(b)
    return p


def _add_suite_benches(b: Any) -> None:
    from node.bench.contracts import add_contract_bench_arguments
    from node.bench.integrity import add_integrity_arguments
    from node.bench.pbft import add_memory_arguments, add_siglimit_arguments
    from node.bench.replay import add_replay_arguments
    from node.bench.sim import add_sim_bench_arguments
    from node.bench.state import add_state_arguments
    from node.bench.suite import add_suite_arguments

    benches: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
        ("transport", "PBFT over TCP and over MQTT, the same load, one run", add_pbft_arguments),
        (
            "contracts",
            "exchange and risk-sharing contract calls on a live cluster",
            add_contract_bench_arguments,
        ),
        (
            "replay",
            "rebuild state from stored blocks, trusting commit certificates",
            add_replay_arguments,
        ),
        ("sim", "simulator speed: simulated seconds per wall second", add_sim_bench_arguments),
        (
            "state",
            "the state root's update per block as the number of accounts grows",
            add_state_arguments,
        ),
        (
            "integrity",
            "the start-up checks of a store (SQLite's, the header chain, the state root)",
            add_integrity_arguments,
        ),
        ("memory", "peak RSS per node while committing many transfers", add_memory_arguments),
        (
            "siglimit",
            "this machine's Ed25519 limit: cores / (n verifications + 1 signature) per tx",
            add_siglimit_arguments,
        ),
        ("suite", "every benchmark, one after another, and a Markdown report", add_suite_arguments),
    ]
    for name, help_, add in benches:
        sp = b.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=cmd_bench)
        add(sp)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 ok, 1 a failed check or refused RPC, 2 a bad cluster.toml (any
    ConfigError, from any command), a launch or fault error, or an unreachable node."""
    args = build_parser().parse_args(argv)
    try:
        # The whole file is checked here, before any command (`up` included) starts anything.
        needs_cluster = args.fn not in (cmd_bench, cmd_sim, cmd_design)
        cfg = load_config(args.config) if needs_cluster else None
        return int(args.fn(args, cfg))
    except (ConfigError, launcher.LaunchError, FaultError) as e:
        return fail("error:", str(e), 2)
    except RpcUnavailable as e:
        return fail("error:", f"{e}; is the cluster up? (`tally up`)", 2)
    except RpcError as e:
        return fail(f"error {e.code}:", e.message, 1)
    except KeyboardInterrupt:
        return 130


def fail(label: str, message: str, code: int) -> int:
    """Print the error as written (no markup: cluster.toml sections look like it; no
    wrapping: a ConfigError is one line) and return the exit code."""
    err.print(Text.assemble((label, "red"), " ", message), soft_wrap=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
