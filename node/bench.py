"""`tally bench pbft`: a real cluster of OS processes driven by a separate load generator.

Each run makes its own cluster in a temporary directory on free loopback
ports, so it never touches the default cluster.  Phases: a fixed offered rate,
then saturation.  Results print as a table and, with --json/--out, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node import launcher
from node.config import load_config, local_cluster_toml

console = Console(stderr=True, width=110)  # the table stays readable in logs and CI


def add_pbft_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=4, help="replicas (default: 4)")
    p.add_argument("--rate", type=int, default=1000, help="fixed offered tx/s (default: 1000)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    p.add_argument("--no-saturation", action="store_true", help="skip the saturation phase")
    p.add_argument("--accounts", type=int, default=32, help="sending accounts")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--batch-wait-ms", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory")
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


def write_cluster(workdir: Path, args: argparse.Namespace, transport: str = "tcp") -> Path:
    accounts = {f"bench{i:03d}": 1_000_000_000 for i in range(args.accounts)}
    pbft = {"batch_size_max": args.batch_size, "batch_wait_ms": args.batch_wait_ms}
    mqtt = {"broker": "spawn"} if transport == "mqtt" else None
    path = workdir / "cluster.toml"
    ports = free_ports(2 * args.nodes)
    path.write_text(local_cluster_toml("bench", ports, accounts, pbft, mqtt=mqtt))
    return path


def run_phase(config: Path, rate: int, duration: float, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "node.loadgen",
        "-c",
        str(config),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run_pbft_bench(args: argparse.Namespace) -> int:
    transports = ["tcp", "mqtt"] if args.transport == "mqtt" else ["tcp"]
    phases = []
    for transport in transports:
        phases += run_cluster(args, transport)
    result = {
        "bench": "pbft",
        "nodes": args.nodes,
        "transports": transports,
        "machine": machine(),
        "phases": phases,
    }
    render(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def run_cluster(args: argparse.Namespace, transport: str) -> list[dict[str, Any]]:
    """The phases of one transport, on a fresh cluster of its own."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tally-bench-{transport}-"))
    config = write_cluster(workdir, args, transport)
    cfg = load_config(config)
    console.print(f"bench: {args.nodes} nodes over {transport} in {workdir}")
    launcher.up(cfg, log_level="WARNING")
    phases = []
    try:
        console.print(f"phase 1: fixed offered rate {args.rate} tx/s for {args.duration:.0f}s")
        phases.append(run_phase(config, args.rate, args.duration, workdir / "fixed.json"))
        if not args.no_saturation:
            console.print(f"phase 2: saturation for {args.duration:.0f}s")
            phases.append(run_phase(config, 0, args.duration, workdir / "saturation.json"))
    finally:
        launcher.down(cfg)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return [{"transport": transport, **phase} for phase in phases]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def render(result: dict[str, Any]) -> None:
    table = Table(title=f"tally bench pbft: {result['nodes']} nodes, signed transfers")
    for col in (
        "transport",
        "phase",
        "offered tx/s",
        "committed tx/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "submitted",
        "committed",
        "rejected",
    ):
        table.add_column(col, justify="right")
    for p in result["phases"]:
        lat = p["latency_ms"]
        table.add_row(
            p["transport"],
            p["mode"],
            str(p["offered_tps"] or "max"),
            str(p["committed_tps"]),
            str(lat["p50"]),
            str(lat["p90"]),
            str(lat["p99"]),
            str(p["submitted"]),
            str(p["committed"]),
            str(p["rejected"]),
        )
    console.print(table)
