"""`tally bench pbft`: a real cluster of OS processes driven by a separate load generator.

Each run makes its own cluster in a temporary directory on free loopback ports, so it never
touches the default cluster.  Per cluster (one per node count and transport) the phases are:
fixed offered rates (open loop), saturation (closed loop, a bounded number in flight), and,
with --half, an open-loop phase at half the saturation rate.  Each phase also records, per
node, CPU seconds and peak RSS, and the peer bytes sent per committed tx.  Results print as a
table and, with --json/--out, as JSON; --plot draws throughput against latency (matplotlib).
Before each node count's cluster starts, the run measures this machine's signature limit
(node/bench/siglimit.py), and every phase carries its committed tx/s as a share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node.bench.siglimit import SignatureLimit, limits_table, measure
from node.cluster import launcher
from node.cluster.config import ClusterConfig, load_config, local_cluster_toml
from node.rpc.client import RpcClient

console = Console(stderr=True, width=130)  # the table stays readable in logs and CI
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def add_pbft_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nodes", default="4", type=number_list(int), help="replicas, or a list: 4,7,10"
    )
    p.add_argument(
        "--rate",
        default="1000",
        type=number_list(int),
        help="fixed offered tx/s, or a list; 0: none (default: 1000)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    p.add_argument("--no-saturation", action="store_true", help="skip the saturation phase")
    p.add_argument(
        "--half", action="store_true", help="add an open-loop phase at half the saturation rate"
    )
    p.add_argument("--accounts", type=int, default=32, help="sending accounts")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--batch-wait-ms", type=int, default=10)
    p.add_argument("--partial-in-flight", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--plot", help="draw throughput vs latency to this PNG (needs matplotlib)")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory")
    p.add_argument(
        "--observe",
        action="store_true",
        help="add a saturation phase with a blocks and a txs subscriber on every node and "
        "/metrics scraped every second, to compare with the plain one",
    )
    p.add_argument(
        "--transport",
        choices=("tcp", "mqtt"),
        default="tcp",
        help="tcp (default), or mqtt through a spawned Mosquitto, measured beside a TCP run "
        "of the same load",
    )


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def int_list(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def number_list(kind: type[float] | type[int]) -> Callable[[str], str]:
    """An argparse type: a comma-separated list of non-negative numbers, checked up front."""

    def check(text: str) -> str:
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers like 4,7,10, got {text!r}"
            ) from None
        if not values or min(values) < 0:
            raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {text!r}")
        return text

    return check


def write_cluster(
    workdir: Path, args: argparse.Namespace, transport: str = "tcp", nodes: int = 4
) -> Path:
    accounts = {f"bench{i:03d}": 1_000_000_000 for i in range(args.accounts)}
    pbft = {"batch_size_max": args.batch_size, "batch_wait_ms": args.batch_wait_ms}
    pbft["partial_in_flight"] = getattr(args, "partial_in_flight", 1)
    mqtt = {"broker": "spawn"} if transport == "mqtt" else None
    path = workdir / "cluster.toml"
    ports = free_ports(2 * nodes)
    path.write_text(local_cluster_toml("bench", ports, accounts, pbft, mqtt=mqtt))
    return path


def run_phase(
    config: Path,
    rate: int,
    duration: float,
    out: Path,
    total: int | None = None,
    observing: bool = False,
) -> dict[str, Any]:
    """One loadgen run, with what it cost every node."""
    cfg = load_config(config)
    before = snapshot(cfg)
    cmd = [sys.executable, "-m", "node.bench.loadgen", "-c", str(config), "--rate", str(rate)]
    cmd += ["--duration", str(duration), "--out", str(out)]
    cmd += ["--total", str(total)] if total else []
    seen = out.with_suffix(".observed.json")
    watcher = None
    if observing:  # its own process: its work must not slow the load generator's
        watch = [sys.executable, "-m", "node.bench.observe", "-c", str(config), "--out", str(seen)]
        watcher = subprocess.Popen(watch)
    try:
        subprocess.run(cmd, check=True)
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(timeout=30)
    result: dict[str, Any] = json.loads(out.read_text())
    if observing:
        result["observed"] = json.loads(seen.read_text())
    return result | costs(before, snapshot(cfg), result["committed"])


def snapshot(cfg: ClusterConfig) -> dict[str, dict[str, float]]:
    """Per node: CPU seconds so far, peak RSS (MB) so far, peer bytes sent so far."""
    sent = asyncio.run(_bytes_sent(cfg))
    shot = {}
    for node in cfg.nodes:
        pid = launcher.running_pid(cfg, node.id)
        if pid is not None:
            shot[node.id] = {"cpu_s": cpu_seconds(pid), "rss_mb": peak_rss_mb(pid)}
            shot[node.id]["bytes_sent"] = sent.get(node.id, 0)
    return shot


async def _bytes_sent(cfg: ClusterConfig) -> dict[str, int]:
    out = {}
    for node in cfg.nodes:
        async with RpcClient(node.rpc_url, timeout=10) as client:
            out[node.id] = (await client.call("status"))["transport"]["bytes_sent"]
    return out


def costs(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], committed: int
) -> dict[str, Any]:
    cpu = {n: round(after[n]["cpu_s"] - before[n]["cpu_s"], 1) for n in after if n in before}
    sent = sum(after[n]["bytes_sent"] - before[n]["bytes_sent"] for n in after if n in before)
    return {
        "cpu_s": cpu,
        "peak_rss_mb": {n: round(after[n]["rss_mb"], 1) for n in after},
        "wire_bytes_per_tx": round(sent / committed) if committed else None,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The process's resident-set high-water mark (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_pbft_bench(args: argparse.Namespace) -> int:
    transports = ["tcp", "mqtt"] if args.transport == "mqtt" else ["tcp"]
    phases = []
    limits: dict[int, SignatureLimit] = {}
    for nodes in int_list(args.nodes):
        # measured before this n's cluster starts, so no node competes for the cores
        limits[nodes] = limit = measure(nodes)
        console.print(f"bench: signature limit for n = {nodes}: {limit.limit_tx_s:.0f} tx/s")
        for transport in transports:
            phases += [with_share(p, limit) for p in run_cluster(args, transport, nodes)]
    result = {
        "bench": "pbft",
        "nodes": int_list(args.nodes),
        "transports": transports,
        "machine": machine(),
        "signature_limit": {str(n): limit.as_dict() for n, limit in limits.items()},
        "phases": phases,
    }
    render(result)
    emit(args, result)
    if args.plot:
        plot(result, Path(args.plot))
    return 0


def with_share(phase: dict[str, Any], limit: SignatureLimit) -> dict[str, Any]:
    """A phase with its committed tx/s as a share of the machine's signature limit."""
    return phase | {"share_of_limit": limit.share(phase["committed_tps"])}


def emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))


def run_cluster(args: argparse.Namespace, transport: str, nodes: int) -> list[dict[str, Any]]:
    """The phases of one transport and node count, on a fresh cluster of its own."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tally-bench-{transport}-{nodes}-"))
    config = write_cluster(workdir, args, transport, nodes)
    cfg = load_config(config)
    console.print(f"bench: {nodes} nodes over {transport} in {workdir}")
    launcher.up(cfg, log_level="WARNING")
    phases = []
    try:
        for rate in [r for r in int_list(args.rate) if r > 0]:
            console.print(f"  fixed offered rate {rate} tx/s for {args.duration:.0f}s")
            phases.append(run_phase(config, rate, args.duration, workdir / f"fixed{rate}.json"))
        if not args.no_saturation:
            console.print(f"  saturation for {args.duration:.0f}s")
            sat = run_phase(config, 0, args.duration, workdir / "saturation.json")
            phases.append(sat)
            if args.observe:
                console.print(f"  saturation, observed, for {args.duration:.0f}s")
                seen = run_phase(config, 0, args.duration, workdir / "observed.json", None, True)
                phases.append(seen | {"mode": "observed"})
            if args.half:
                half = max(1, int(sat["committed_tps"] / 2))
                console.print(f"  half of saturation: {half} tx/s for {args.duration:.0f}s")
                phase = run_phase(config, half, args.duration, workdir / "half.json")
                phases.append(phase | {"mode": "half"})
    finally:
        launcher.down(cfg)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return [{"transport": transport, "nodes": nodes, **phase} for phase in phases]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def render(result: dict[str, Any]) -> None:
    table = Table(title="tally bench pbft: signed transfers, every replica verifying every one")
    # the share of the signature limit sits in the tx/s cell: a column of its own would
    # push the table past the console's 130 columns, and rich would truncate the cells
    columns = ["n", "transport", "phase", "offered", "committed tx/s (share of limit)"]
    columns += ["p50 ms", "p90 ms", "p99 ms", "committed", "CPU s/node", "peak RSS MB", "wire B/tx"]
    for col in columns:
        table.add_column(col, justify="right")
    for p in result["phases"]:
        lat = p["latency_ms"]
        cpu = p.get("cpu_s", {})
        rss = p.get("peak_rss_mb", {})
        table.add_row(
            str(p["nodes"]),
            p["transport"],
            p["mode"],
            str(p["offered_tps"] or "max"),
            tps_cell(p),
            str(lat["p50"]),
            str(lat["p90"]),
            str(lat["p99"]),
            str(p["committed"]),
            f"{max(cpu.values(), default=0):.1f}",
            f"{max(rss.values(), default=0):.0f}",
            str(p.get("wire_bytes_per_tx")),
        )
    console.print(table)
    limits = [SignatureLimit(**s) for s in result.get("signature_limit", {}).values()]
    if limits:
        console.print(limits_table(limits))


def tps_cell(phase: dict[str, Any]) -> str:
    """Committed tx/s, and in brackets its share of the signature limit when it was measured."""
    share = phase.get("share_of_limit")
    tps = phase["committed_tps"]
    return f"{tps}" if share is None else f"{tps} ({share:.2f})"


def add_siglimit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nodes", default="4", type=number_list(int), help="replicas, or a list: 4,7,10"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")


def run_siglimit_bench(args: argparse.Namespace) -> int:
    """`tally bench siglimit`: the signature limit alone (node/bench/siglimit.py)."""
    limits = [measure(n) for n in int_list(args.nodes) if n > 0]
    signature_limit = {str(limit.nodes): limit.as_dict() for limit in limits}
    result = {"bench": "siglimit", "machine": machine(), "signature_limit": signature_limit}
    console.print(limits_table(limits))
    emit(args, result)
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput against p50 and p99 latency, one line per (nodes, transport)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("no plot: install the bench extra (pip install -e '.[bench]')")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[dict[str, Any]]] = {}
    for p in result["phases"]:
        series.setdefault(f"n={p['nodes']} {p['transport']}", []).append(p)
    for label, phases in series.items():
        phases.sort(key=lambda p: p["committed_tps"])
        x = [p["committed_tps"] for p in phases]
        ax.plot(x, [p["latency_ms"]["p50"] for p in phases], "o-", label=f"{label} p50")
        ax.plot(x, [p["latency_ms"]["p99"] for p in phases], "x--", label=f"{label} p99")
    ax.set_xlabel("committed tx/s")
    ax.set_ylabel("submit-to-commit latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("tally bench pbft")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    console.print(f"plot: {path}")


def add_memory_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transfers", type=int, default=1_000_000, help="transfers to commit")
    p.add_argument("--accounts", type=int, default=32, help="sending accounts")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--batch-wait-ms", type=int, default=10)
    p.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")


def run_memory_bench(args: argparse.Namespace) -> int:
    """Commit `--transfers` transfers at saturation on 4 nodes, sampling each node's RSS."""
    limit = measure(4)  # before the cluster starts: see run_pbft_bench
    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-memory-"))
    config = write_cluster(workdir, args)
    cfg = load_config(config)
    console.print(f"memory: {args.transfers} transfers on 4 nodes in {workdir}")
    launcher.up(cfg, log_level="WARNING")
    samples: list[dict[str, Any]] = []
    try:
        cmd = [sys.executable, "-m", "node.bench.loadgen", "-c", str(config), "--rate", "0"]
        cmd += ["--duration", "1e9", "--total", str(args.transfers)]
        cmd += ["--out", str(workdir / "memory.json"), "--drain", "120"]
        loadgen = subprocess.Popen(cmd)
        while loadgen.poll() is None:
            samples.append(asyncio.run(_rss_sample(cfg)))
            console.print(f"  {samples[-1]['committed']} committed, RSS {samples[-1]['rss_mb']}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                loadgen.wait(timeout=args.every)
        phase = json.loads((workdir / "memory.json").read_text())
        samples.append(asyncio.run(_rss_sample(cfg)))
        peaks = {
            n.id: round(peak_rss_mb(launcher.running_pid(cfg, n.id) or 0), 1) for n in cfg.nodes
        }
    finally:
        launcher.down(cfg)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "bench": "memory",
        "machine": machine(),
        "transfers": args.transfers,
        "committed": phase["committed"],
        "committed_tps": phase["committed_tps"],
        "signature_limit": {"4": limit.as_dict()},
        "share_of_limit": limit.share(phase["committed_tps"]),
        "peak_rss_mb": peaks,
        "samples": samples,
    }
    console.print(f"peak RSS per node after {phase['committed']} transfers: {peaks}")
    emit(args, result)
    return 0


async def _rss_sample(cfg: ClusterConfig) -> dict[str, Any]:
    rss = {}
    for node in cfg.nodes:
        pid = launcher.running_pid(cfg, node.id)
        if pid is not None:
            rss[node.id] = round(current_rss_mb(pid), 1)
    async with RpcClient(cfg.nodes[0].rpc_url, timeout=10) as client:
        committed = (await client.call("status"))["txs_committed"]
    return {"committed": committed, "rss_mb": rss}


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
