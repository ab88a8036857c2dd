"""`tally bench suite`: every benchmark in one run, its JSON kept, and one Markdown report.

The report (`report.md` in --out-dir) holds the machine, the exact commands, and the figures
that BENCHMARKS.md quotes, so every figure there comes from one run of the listed commands.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from node.bench.pbft import console, machine, tps_cell

# (name, arguments after `tally bench`): the order they run in.
SUITE: list[tuple[str, list[str]]] = [
    ("pbft4", ["pbft", "--nodes", "4", "--rate", "1000", "--duration", "60", "--half"]),
    ("pbft7_10", ["pbft", "--nodes", "7,10", "--rate", "0", "--duration", "30"]),
    ("transport", ["transport", "--rate", "1000", "--duration", "20"]),
    ("contracts", ["contracts", "--pairs", "16", "--periods", "2"]),
    ("replay", ["replay", "--blocks", "400", "--txs", "500"]),
    ("sim", ["sim", "--rates", "1,5,20", "--duration", "60", "--seeds", "3"]),
    ("memory", ["memory", "--transfers", "1000000"]),
    ("pow", ["pow", "--blocks", "100"]),
    (
        "state",
        ["state", "--accounts", "100,10000,1000000", "--stores", "sqlite,chain", "--reps", "5"],
    ),
]


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", default="bench-results", help="where JSON, plot, report go")
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(n for n, _ in SUITE))


def run_suite(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only.split(",")) if args.only else {n for n, _ in SUITE}
    commands: list[str] = []
    for name, bench_args in SUITE:
        if name not in wanted:
            continue
        extra = ["--out", str(out / f"{name}.json")]
        if name == "pbft4":
            extra += ["--plot", str(out / "pbft.png")]
        commands.append("tally bench " + shlex.join(bench_args + extra))
        console.rule(f"[bold]{name}[/]")
        start = time.monotonic()
        cmd = [sys.executable, "-m", "node.cli.main", "bench", *bench_args, *extra]
        subprocess.run(cmd, check=True)
        console.print(f"{name}: {time.monotonic() - start:.0f} s")
    report = render_report(out, commands)
    (out / "report.md").write_text(report)
    print(report)
    return 0


def load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def render_report(out: Path, commands: list[str]) -> str:
    m = machine()
    lines = [
        "## Machine",
        "",
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['platform']}.",
        "",
        "## Commands (run in this order, one after another)",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    for section in (_pbft, _transport, _contracts, _replay, _sim, _memory, _pow, _state):
        lines += section(out)
    return "\n".join(lines)


def table(title: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown section holding one table."""
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _latency(p: dict[str, Any], *keys: str) -> list[Any]:
    return [p["latency_ms"][k] for k in keys]


def _share_of(result: dict[str, Any]) -> str:
    share = result.get("share_of_limit")
    return "" if share is None else f" ({share:.2f} of the signature limit)"


def _limits(*results: dict[str, Any] | None) -> list[str]:
    """One sentence: the signature limit each run measured, per node count."""
    limits = {n: s for r in results if r for n, s in r.get("signature_limit", {}).items()}
    if not limits:
        return []
    each = "; ".join(
        f"n = {n}: {s['limit_tx_s']:,.0f} tx/s (verify {s['verify_us']:.1f} µs, "
        f"sign {s['sign_us']:.1f} µs, {s['cores']} cores)"
        for n, s in sorted(limits.items(), key=lambda item: int(item[0]))
    )
    return [
        "In brackets: the share of this machine's signature limit, cores / (n verifications "
        f"+ 1 signature) per tx, measured by PyNaCl in the same run: {each}.",
        "",
    ]


def _pbft(out: Path) -> list[str]:
    results = [load(out, "pbft4"), load(out, "pbft7_10")]
    phases = [p for r in results for p in (r or {}).get("phases", [])]
    if not phases:
        return []
    header = ["n", "phase", "offered tx/s", "committed tx/s (share of limit)"]
    header += ["p50 ms", "p90 ms", "p99 ms"]
    header += ["committed", "CPU s per node (max)", "peak RSS MB (max)", "wire bytes per tx"]
    rows = [
        [
            p["nodes"],
            p["mode"],
            p["offered_tps"] or "max",
            tps_cell(p),
            *_latency(p, "p50", "p90", "p99"),
            p["committed"],
            f"{max(p['cpu_s'].values()):.1f}",
            f"{max(p['peak_rss_mb'].values()):.0f}",
            p["wire_bytes_per_tx"],
        ]
        for p in phases
    ]
    lines = table("PBFT (signed transfers, every replica verifying every signature)", header, rows)
    lines += _limits(*results)
    sat = {p["nodes"]: p["committed_tps"] for p in phases if p["mode"] == "saturation"}
    if 4 in sat and 7 in sat:
        lines += [f"n = 7 reaches {100 * sat[7] / sat[4]:.0f}% of n = 4's saturation rate.", ""]
    return lines


def _transport(out: Path) -> list[str]:
    result = load(out, "transport")
    if result is None:
        return []
    header = ["transport", "phase", "offered tx/s", "committed tx/s (share of limit)"]
    header += ["p50 ms", "p99 ms"]
    rows = [
        [
            p["transport"],
            p["mode"],
            p["offered_tps"] or "max",
            tps_cell(p),
            *_latency(p, "p50", "p99"),
            p["wire_bytes_per_tx"],
        ]
        for p in result["phases"]
    ]
    lines = table("Transport: TCP and MQTT, the same load", [*header, "wire bytes per tx"], rows)
    return lines + _limits(result)


def _contracts(out: Path) -> list[str]:
    result = load(out, "contracts")
    if result is None:
        return []
    title = f"Contracts ({result['pairs']} pairs playing concurrently, each call waited for)"
    header = ["contract", "calls", "calls/s", "p50 ms", "p90 ms", "p99 ms"]
    rows = [
        [p["phase"], p["calls"], p["calls_per_s"], *_latency(p, "p50", "p90", "p99")]
        for p in result["phases"]
    ]
    return table(title, header, rows)


def _replay(out: Path) -> list[str]:
    result = load(out, "replay")
    if result is None:
        return []
    chain = result["chain"]
    title = f"Replay from genesis ({chain['blocks']} blocks of {chain['txs_per_block']} transfers)"
    rows = [[m["mode"], m["txs"], m["seconds"], m["txs_per_s"]] for m in result["modes"]]
    return table(title, ["checks", "txs", "seconds", "tx/s"], rows)


def _sim(out: Path) -> list[str]:
    result = load(out, "sim")
    if result is None:
        return []
    header = ["offered tx/s", "runs", "simulated s", "wall s", "simulated s per wall s"]
    rows = [
        [f"{r['rate']:g}", r["runs"], r["virtual_s"], r["wall_s"], r["speed"]]
        for r in result["runs"]
    ]
    return table(f"Simulator ({result['nodes']} replicas, no faults)", header, rows)


def _memory(out: Path) -> list[str]:
    result = load(out, "memory")
    if result is None:
        return []
    peaks = ", ".join(f"{n} {v:.0f}" for n, v in result["peak_rss_mb"].items())
    samples = result["samples"]
    curve = ", ".join(
        f"{s['committed'] // 1000}k: {max(s['rss_mb'].values()):.0f}"
        for s in samples[:: max(1, len(samples) // 8)]
    )
    return [
        "## Memory",
        "",
        f"{result['committed']} transfers committed at {result['committed_tps']} tx/s"
        f"{_share_of(result)}. "
        f"Peak RSS per node (MB): {peaks}. Largest RSS along the way (committed: MB): {curve}.",
        "",
        *_limits(result),
    ]


def _pow(out: Path) -> list[str]:
    result = load(out, "pow")
    if result is None:
        return []
    return [
        "## Proof of work",
        "",
        f"Mean block interval {result['mean_interval_ms']:.0f} ms over blocks "
        f"{result['from_height']}..{result['to_height']} (target "
        f"{result['settings']['target_block_ms']} ms; "
        f"deviation {100 * result['deviation']:+.1f}%).",
        "",
    ]


def _state(out: Path) -> list[str]:
    result = load(out, "state")
    if result is None:
        return []
    changes = result["changes"]
    tree = table(
        f"State size: one block's tree update ({changes} accounts touched)",
        [
            "accounts",
            "store",
            "update ms p50",
            "flush + commit ms (chain: Store.append)",
            "nodes written",
            "peak RSS MB",
        ],
        [
            [
                f"{r['accounts']:,}",
                r["store"],
                r["update_ms_median"],
                r["commit_ms_median"],
                r["nodes_written"],
                r["peak_rss_mb"],
            ]
            for r in result["results"]
        ],
    )
    if not result["live"]:
        return tree + _limits(result)
    live = table(
        "State size: n = 4 saturation with N accounts in the state",
        [
            "accounts",
            "committed tx/s (share of limit)",
            "of the smallest size",
            "p50 ms",
            "peak RSS MB per node (max)",
            "restarted node RSS MB",
        ],
        [
            [
                f"{r['accounts']:,}",
                tps_cell(r),
                r["tps_ratio"],
                r["latency_ms"]["p50"],
                f"{max(r['peak_rss_mb'].values()):.0f}",
                r["restart_rss_mb"],
            ]
            for r in result["live"]
        ],
    )
    return tree + live + _limits(result)
