"""cluster.toml's schema: every value checked on load, one line per broken rule, nothing
started by `tally up` for a bad file, and each default defined once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.params import ParamError
from consensus.pbft.config import PbftConfig, PbftParams
from consensus.pow.config import PowConfig, PowParams
from ledger.block import Member
from node.cli.main import main
from node.cluster.config import (
    ClusterConfig,
    ClusterSection,
    ConfigError,
    MqttSettings,
    NodeSpec,
    RpcSettings,
    SchemaError,
    load_config,
)
from node.sim.cluster import SimCluster
from node.sim.params import POW_SIM_DIFFICULTY, SIM_PBFT
from node.sim.run import SIM_PARAMS

ROOT = Path(__file__).resolve().parents[2]


def node(i: int, **changes: Any) -> str:
    entry: dict[str, Any] = {"id": f"n{i}", "host": "127.0.0.1", "port": 17100 + i}
    entry["rpc_port"] = 18100 + i
    entry |= changes
    lines = [f"{k} = {_toml(v)}" for k, v in entry.items() if v is not None]
    return "[[node]]\n" + "\n".join(lines) + "\n"


def cluster_toml(
    *, cluster: str = "", pbft: str = "", extra: str = "", nodes: list[str] | None = None
) -> str:
    head = f'[cluster]\nname = "schema"\ndata_dir = "data"\n{cluster}\n\n[pbft]\n{pbft}\n\n'
    body = "\n".join(nodes if nodes is not None else [node(i) for i in range(4)])
    return head + body + "\n[genesis]\naccounts = { alice = 10 }\n" + extra


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_the_base_file_of_these_tests_is_valid(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, cluster_toml()))
    assert cfg.node_ids() == ["n0", "n1", "n2", "n3"] and cfg.pbft == PbftParams()


# -- tally up with a bad file: one line, exit 2, nothing started -----------------------------

CLI_CASES = {
    "window 0": (cluster_toml(pbft="window = 0"), "[pbft] window = 0: must be >= 1"),
    "no rpc_port": (
        cluster_toml(nodes=[node(0), node(1, rpc_port=None), node(2), node(3)]),
        "[[node]] #2 rpc_port: required",
    ),
    "duplicate port": (
        cluster_toml(nodes=[node(0), node(1, port=17100), node(2), node(3)]),
        "[[node]] #2 port = 17100: already the port of [[node]] #1 (n0) on the same host",
    ),
    "3 PBFT nodes": (
        cluster_toml(nodes=[node(i) for i in range(3)]),
        '[cluster] consensus = "pbft": needs at least 4 [[node]] entries (n = 3f+1 with f >= 1)'
        ", got 3",
    ),
    "unknown consensus": (
        cluster_toml(cluster='consensus = "raft"'),
        '[cluster] consensus = "raft": must be one of "pbft", "pow"',
    ),
}


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_tally_up_refuses_a_bad_file_in_one_line_and_starts_nothing(
    tmp_path: Path, case: str
) -> None:
    text, message = CLI_CASES[case]
    path = write(tmp_path, text)
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(path), "up", "--timeout", "5"]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
        lines = out.stderr.splitlines()
        assert out.returncode == 2, out.stderr
        assert lines == [f"error: {path}: {message}"]
        assert not (tmp_path / "data").exists()  # no keys, genesis, logs or pid files
        assert _processes_naming(str(path)) == []  # no node, broker or supervisor
    finally:
        for pid in _processes_naming(str(path)):  # only if up wrongly started something
            os.kill(pid, 9)


def test_every_config_error_of_any_command_exits_with_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, cluster_toml(pbft="window = 0"))
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(path), "status"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr  # a real process
    for args in (["down"], ["keys"], ["verify"]):  # the same main, in this process
        code = main(["-c", str(path), *args])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, (args, err)
    cmd = [sys.executable, "-m", "node.cli.main", "sim", "--consensus", "pow"]
    out = subprocess.run([*cmd, "--cluster", str(path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "[pbft] window = 0: must be >= 1" in out.stderr


# -- the rules, table by table ---------------------------------------------------------------


def _minimum(schema: type, name: str) -> int:
    return int(next(f for f in fields(schema) if f.name == name).metadata["min"])


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from([f.name for f in fields(PbftParams)]),
    value=st.integers(min_value=-(2**40), max_value=2**40),
)
def test_each_pbft_key_is_an_integer_with_a_lower_bound(
    tmp_path_factory: pytest.TempPathFactory, name: str, value: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("pbft")
    text = cluster_toml(pbft=f"{name} = {value}")
    low = _minimum(PbftParams, name)
    if value >= low:
        assert getattr(load_config(write(tmp_path, text)).pbft, name) == value
    else:
        assert refused(tmp_path, text) == f"[pbft] {name} = {value}: must be >= {low}"


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from([f.name for f in fields(PowParams) if f.name != "limit_bits"]),
    value=st.integers(min_value=-(2**40), max_value=2**40),
)
def test_each_pow_key_is_an_integer_with_a_lower_bound(
    tmp_path_factory: pytest.TempPathFactory, name: str, value: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("pow")
    text = cluster_toml(cluster='consensus = "pow"', extra=f"\n[pow]\n{name} = {value}\n")
    low = _minimum(PowParams, name)
    if value >= low:
        assert getattr(load_config(write(tmp_path, text)).pow, name) == value
    else:
        assert refused(tmp_path, text) == f"[pow] {name} = {value}: must be >= {low}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # [cluster]
        (cluster_toml(cluster='transport = "udp"'), 'transport = "udp": must be one of "tcp"'),
        (
            cluster_toml().replace('data_dir = "data"', "data_dir = 3"),
            "[cluster] data_dir = 3: must be a string",
        ),
        (cluster_toml(cluster="max_frame_bytes = 100"), "max_frame_bytes = 100: must be >= 1024"),
        (
            cluster_toml(cluster='sqlite_synchronous = "sometimes"'),
            '[cluster] sqlite_synchronous = "SOMETIMES": must be one of "OFF", "NORMAL"',
        ),
        (cluster_toml(cluster="nodes = 4"), "[cluster] nodes = 4: unknown key (known: name,"),
        (cluster_toml().replace('"schema"', '"a b"'), '[cluster] name = "a b": must be letters'),
        # the types of [pbft]
        (cluster_toml(pbft="window = true"), "[pbft] window = true: must be an integer"),
        (cluster_toml(pbft="window = 2.5"), "[pbft] window = 2.5: must be an integer"),
        (cluster_toml(pbft='window = "8"'), '[pbft] window = "8": must be an integer'),
        (cluster_toml(pbft="windw = 8"), "[pbft] windw = 8: unknown key (known: batch_size_max,"),
        # [pow]
        (
            cluster_toml(extra="[pow]\nlimit_bits = 0x00800000\n"),
            "[pow] limit_bits = 8388608: must be a valid target: bits 0x00800000 have the sign",
        ),
        (
            cluster_toml(cluster='consensus = "pow"', nodes=[node(0)]),
            '[cluster] consensus = "pow": needs at least 2 [[node]] entries, got 1',
        ),
        # [[node]]
        (cluster_toml(nodes=[node(0, id=None), node(1)]), "[[node]] #1 id: required"),
        (
            cluster_toml(nodes=[node(0), node(1, port=None), node(2), node(3)]),
            '[[node]] #2 port: required with transport = "tcp"',
        ),
        (
            cluster_toml(nodes=[node(0), node(1, id="n0"), node(2), node(3)]),
            '[[node]] #2 id = "n0": already used by [[node]] #1',
        ),
        (
            cluster_toml(nodes=[node(0), node(1, id="n/1"), node(2), node(3)]),
            '[[node]] #2 id = "n/1": must be letters, digits',
        ),
        (
            cluster_toml(nodes=[node(0), node(1, id="supervisor"), node(2), node(3)]),
            '[[node]] #2 id = "supervisor": is reserved',
        ),
        (
            cluster_toml(nodes=[node(0), node(1, rpc_port=17100), node(2), node(3)]),
            "[[node]] #2 rpc_port = 17100: already the port of [[node]] #1 (n0) on the same host",
        ),
        (
            cluster_toml(nodes=[node(0, host="0.0.0.0"), node(1, host="10.0.0.2", port=17100)]),
            "[[node]] #2 port = 17100: already the port of [[node]] #1 (n0) on the same host",
        ),
        (
            cluster_toml(nodes=[node(0, rpc_port=17100)]),
            "[[node]] #1 rpc_port = 17100: must differ",
        ),
        (cluster_toml(nodes=[node(0, port=70000)]), "[[node]] #1 port = 70000: must be <= 65535"),
        (cluster_toml(nodes=[node(0, rpc_port=0)]), "[[node]] #1 rpc_port = 0: must be >= 1"),
        (cluster_toml(nodes=[node(0, hash_share=-0.5)]), "hash_share = -0.5: must be >= 0"),
        (cluster_toml(nodes=[node(0, weight=1)]), "[[node]] #1 weight = 1: unknown key"),
        ("node = 1\n" + cluster_toml(nodes=[]), "node = 1: must be an array of tables"),
        # [genesis], [[fault]], the tables themselves
        (cluster_toml().replace("alice = 10", "alice = -1"), "[genesis] accounts.alice = -1: must"),
        (cluster_toml().replace("alice = 10", 'alice = "10"'), 'accounts.alice = "10": must be an'),
        (cluster_toml(extra="supply = 5\n"), "[genesis] supply = 5: unknown key (known: accounts)"),
        (
            cluster_toml().replace("alice = 10", f"a = {2**62}, b = {2**62}"),
            "[genesis] accounts: balances must sum to <= 2**63 - 1",
        ),
        (cluster_toml(extra='[[fault]]\nkind = "nope"\n'), "[[fault]] #1: unknown fault kind"),
        (
            cluster_toml(extra='[[fault]]\nkind = "drop"\nnode = "n9"\n'),
            '[[fault]] #1 node = "n9": must be a [[node]] id or *',
        ),
        (cluster_toml(extra="[clutser]\nname = 1\n"), "[clutser]: unknown table (known: [cluster]"),
        (cluster_toml() + "pbft = 1\n", "[genesis] pbft = 1: unknown key"),
        ("pbft = 1\n" + cluster_toml().replace("[pbft]\n", ""), "pbft = 1: must be a table"),
    ],
)
def test_a_broken_rule_is_one_line_naming_section_key_and_rule(
    tmp_path: Path, text: str, message: str
) -> None:
    assert message in refused(tmp_path, text)


def test_what_the_rules_allow(tmp_path: Path) -> None:
    mqtt_nodes = [node(i, port=None) for i in range(4)]
    accepted = [
        cluster_toml(pbft="batch_wait_ms = 0\nmax_clock_skew_ms = 0"),
        cluster_toml(cluster='sqlite_synchronous = "normal"'),
        cluster_toml(cluster='transport = "mqtt"', nodes=mqtt_nodes),  # no peer ports
        # the same port on two hosts
        cluster_toml(nodes=[node(0), node(1, host="10.0.0.2", port=17100), node(2), node(3)]),
        cluster_toml(cluster='consensus = "pow"', nodes=[node(0, hash_share=0.5), node(1)]),
    ]
    for text in accepted:
        load_config(write(tmp_path, text))
    assert load_config(ROOT / "cluster.toml").pbft == PbftParams()


def test_the_consensus_params_check_themselves_with_a_typed_error() -> None:
    with pytest.raises(ParamError) as info:
        PbftParams(window=0)
    assert (info.value.key, info.value.value, info.value.rule) == ("window", 0, "must be >= 1")
    members = (Member("a", b"k" * 32),)
    with pytest.raises(ParamError, match="checkpoint_interval = 0: must be >= 1"):
        PbftConfig("c", members, checkpoint_interval=0)
    with pytest.raises(ParamError, match="confirmations = 0: must be >= 1"):
        PowConfig.of("c", members, PowParams(confirmations=0))


def test_a_schema_error_carries_its_parts(tmp_path: Path) -> None:
    path = write(tmp_path, cluster_toml(pbft="window = 0"))
    with pytest.raises(SchemaError) as info:
        load_config(path)
    e = info.value
    assert (e.file, e.section, e.key, e.value, e.rule) == (
        str(path),
        "[pbft]",
        "window",
        0,
        "must be >= 1",
    )


# -- defaults, once --------------------------------------------------------------------------


def test_the_pbft_and_pow_tables_are_the_consensus_params_themselves(tmp_path: Path) -> None:
    types = {f.name: f.type for f in fields(ClusterConfig)}
    assert types["pbft"] == "PbftParams" and types["pow"] == "PowParams"
    cfg = load_config(write(tmp_path, cluster_toml()))
    assert type(cfg.pbft) is PbftParams and type(cfg.pow) is PowParams
    assert cfg.pbft == PbftParams() and cfg.pow == PowParams()
    # a replica's config is the params plus the chain: the same fields, the same defaults
    assert issubclass(PbftConfig, PbftParams) and issubclass(PowConfig, PowParams)
    members = tuple(Member(f"n{i}", bytes([i]) * 32) for i in range(4))
    assert PbftConfig("c", members).params == PbftParams()
    assert PowConfig("c", members).params == PowParams()
    tuned = PbftParams(window=3)
    assert PbftConfig.of("c", members, tuned).params == tuned


def test_the_simulator_takes_the_same_params_with_explicit_overrides() -> None:
    assert PbftParams(batch_size_max=50, batch_wait_ms=5) == SIM_PBFT
    assert SimCluster(4, 1).config.params == SIM_PBFT
    assert SimCluster(4, 1, config={"window": 2}).config.params == PbftParams(
        batch_size_max=50, batch_wait_ms=5, window=2
    )
    whole = PbftParams(window=3)  # e.g. a cluster.toml's [pbft]: taken as it is
    assert SimCluster(4, 1, config=whole).config.params == whole
    pow_cfg = SimCluster(2, 1, consensus="pow").config
    assert pow_cfg.params == PowParams(initial_difficulty=POW_SIM_DIFFICULTY)
    assert SIM_PARAMS.batch_size_max == SIM_PBFT.batch_size_max


def test_tally_sim_flags_keep_the_pbft_rules() -> None:
    cmd = [sys.executable, "-m", "node.cli.main", "sim", "--window", "0", "--duration", "0.1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "argument --window: 0: must be >= 1" in out.stderr


# -- the README lists every key, with its default and its rule -------------------------------

SCHEMAS: dict[str, type] = {
    "cluster": ClusterSection,
    "pbft": PbftParams,
    "pow": PowParams,
    "mqtt": MqttSettings,
    "rpc": RpcSettings,
    "node": NodeSpec,
}
EXAMPLES = {("cluster", "name"), ("cluster", "data_dir"), ("cluster", "consensus")}
EXAMPLES |= {("cluster", "transport"), ("node", "id"), ("node", "port"), ("node", "rpc_port")}
EXAMPLES |= {("node", "hash_share")}


def readme_keys() -> dict[tuple[str, str], tuple[Any, str]]:
    """(table, key) -> (value, comment) of every `key = value` line of the README's
    cluster.toml blocks, commented out or not."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## cluster.toml\n") :]
    section = section[: section.index("\n## ", 5)]
    found: dict[tuple[str, str], tuple[Any, str]] = {}
    table = ""
    for block in re.findall(r"```toml\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if m := re.match(r"\[+(\w+)\]+", line):
                table = m.group(1)
            elif m := re.match(r"#? ?(\w+) = (.+?)\s*(?:#\s*(.*))?$", line):
                key, value, comment = m.groups()
                if table in SCHEMAS and value != '"..."':
                    found[(table, key)] = (tomllib.loads(f"v = {value}")["v"], comment or "")
    return found


def test_the_readme_lists_every_key_with_its_default_and_rule() -> None:
    listed = readme_keys()
    for table, schema in SCHEMAS.items():
        for f in fields(schema):
            assert (table, f.name) in listed, f"README: [{table}] {f.name} is missing"
            value, comment = listed[(table, f.name)]
            if (table, f.name) not in EXAMPLES:
                assert value == f.default, f"README: [{table}] {f.name} = {value!r}"
            for bound, word in (("min", ">="), ("max", "<=")):
                if bound in f.metadata and table != "node":
                    rule = f"{word} {f.metadata[bound]}"
                    assert rule in comment, f"README: [{table}] {f.name}: say {rule!r}"
    for (table, key), _ in listed.items():
        assert key in {f.name for f in fields(SCHEMAS[table])}, f"README: [{table}] {key}?"
