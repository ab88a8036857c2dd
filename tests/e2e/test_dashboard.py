"""`tally dashboard` in a real browser (Debian's Chromium, driven by Playwright) over a live
4-node cluster: the nodes and their heights, a transfer's block and tx, a fault refused
without the admin token and injected and healed with it, and the open contracts.

Skipped without Playwright or /usr/bin/chromium, unless TALLY_REQUIRE_CHROMIUM=1 (CI
installs Chromium): then it fails.  A browser is never downloaded.  With TALLY_SCREENSHOT
set, the final page is also saved there (the README's docs/dashboard.png).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.bench.pbft import free_ports
from node.cli.fault import token
from node.cluster.config import ClusterConfig
from tests.helpers.livecluster import live_cluster

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # Playwright's waits: generous, so a loaded machine is slower, never wrong
ACCOUNTS = {"alice": 10**9, "bob": 10**9}


def need_browser() -> Any:
    """Playwright's sync API; skip (or, when CI demands it, fail) without it or Chromium."""
    why = None
    try:
        from playwright import sync_api
    except ImportError:
        why = "the playwright package is not installed (pip install 'playwright>=1.40')"
    if why is None and not CHROMIUM.exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if why is not None:
        if os.environ.get("TALLY_REQUIRE_CHROMIUM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return sync_api


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    with live_cluster(
        tmp_path_factory.mktemp("dash"), "dash", ACCOUNTS, {"batch_wait_ms": 5}
    ) as cfg:
        yield cfg


@pytest.fixture
def dashboard(cluster: ClusterConfig, tmp_path: Path) -> Iterator[str]:
    """`tally dashboard` on a free port, as a process of its own; its URL."""
    port = free_ports(1)[0]
    cmd = [sys.executable, "-m", "node.cli.main", "dashboard", "-c", str(cluster.path)]
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once it listens
        assert f"http://127.0.0.1:{port}/" in line, (line, (tmp_path / "dashboard.log").read_text())
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def tally(cfg: ClusterConfig, *args: str) -> Any:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_dashboard_in_a_browser(cluster: ClusterConfig, dashboard: str, tmp_path: Path) -> None:
    api = need_browser()
    expect = api.expect
    with api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1500, "height": 1250},
        )
        try:
            page = browser.new_page()
            page.goto(dashboard)
            see_nodes_and_a_transfer(expect, page, cluster)
            see_open_contracts(expect, page, cluster)
            for amount in range(1, 5):  # a few more blocks and chart points for the picture
                tally(
                    cluster,
                    "tx",
                    "transfer",
                    "--from",
                    "bob",
                    "--to",
                    "alice",
                    "--amount",
                    str(amount),
                    "--wait",
                )
            fault = faults_need_the_token(expect, page, cluster)
            save_screenshot(page, tmp_path)  # with a block, a tx and a fault in the picture
            fault.locator("button").click()  # heal it
            expect(page.locator("#fault-message")).to_have_text(
                re.compile(r"^n3: ok healed n3-\d+$"), timeout=WAIT_MS
            )
            expect(fault).to_have_count(0, timeout=WAIT_MS)
        finally:
            browser.close()


def see_nodes_and_a_transfer(expect: Any, page: Any, cfg: ClusterConfig) -> None:
    rows = page.locator("#nodes tbody tr")
    expect(rows).to_have_count(4, timeout=WAIT_MS)
    for node in cfg.node_ids():
        row = page.locator(f'#nodes tr[data-node="{node}"]')
        expect(row.locator(".health")).to_have_text("up", timeout=WAIT_MS)
        expect(row.locator(".height")).to_have_text(re.compile(r"^\d+$"), timeout=WAIT_MS)
    expect(page.locator('#nodes tr[data-node="n0"] .role')).to_have_text("primary")
    sent = tally(cfg, "tx", "transfer", "--from", "alice", "--to", "bob", "--amount", "7", "--wait")
    height, tx_id = sent["height"], sent["tx_id"]
    for node in cfg.node_ids():  # every node's row reaches the transfer's block
        cell = page.locator(f'#nodes tr[data-node="{node}"] .height')
        expect(cell).to_have_text(re.compile(r"^\d+$"), timeout=WAIT_MS)
        page.wait_for_function(
            "([sel, h]) => Number(document.querySelector(sel)?.textContent) >= h",
            arg=[f'#nodes tr[data-node="{node}"] .height', height],
            timeout=WAIT_MS,
        )
    block = page.locator(f'#blocks tr[data-height="{height}"]')
    expect(block).to_be_visible(timeout=WAIT_MS)
    block.click()
    link = page.locator(f'#block-txs a.tx[data-tx="{tx_id}"]')
    expect(link).to_have_text(tx_id, timeout=WAIT_MS)
    link.click()
    expect(page.locator("#tx-detail")).to_contain_text(tx_id, timeout=WAIT_MS)


def faults_need_the_token(expect: Any, page: Any, cfg: ClusterConfig) -> Any:
    """A delay of 5 ms on n3 (harmless), refused without the token and with a wrong one,
    then injected with it: its row in the listing."""
    message = page.locator("#fault-message")
    page.select_option("#fault-node", "n3")
    page.select_option("#fault-kind", "delay")
    page.fill("#fault-params", "ms=5,jitter_ms=0")
    page.click("#inject")
    expect(message).to_have_text("n3: refused: unauthorized", timeout=WAIT_MS)
    fault = page.locator('#faults tr[data-fault-node="n3"][data-fault-kind="delay"]')
    expect(fault).to_have_count(0)

    page.fill("#token", "not-the-token")
    page.click("#inject")
    expect(message).to_have_text("n3: refused: unauthorized", timeout=WAIT_MS)

    page.fill("#token", token(cfg))
    page.click("#inject")
    expect(message).to_have_text(re.compile(r"^n3: ok n3-\d+$"), timeout=WAIT_MS)
    expect(fault).to_have_count(1, timeout=WAIT_MS)
    expect(fault).to_contain_text("ms=5", timeout=WAIT_MS)
    expect(page.locator("#faults-source")).to_contain_text("fault_list", timeout=WAIT_MS)
    return fault


def see_open_contracts(expect: Any, page: Any, cfg: ClusterConfig) -> None:
    """One exchange offer, open (its windows long): listed with its phase."""
    windows = ",".join(["1000"] * 5)
    offer = ["offer", "--from", "alice", "--to", "bob", "--windows", windows]
    cid = tally(cfg, "contract", "exchange", *offer)["contract_id"]
    row = page.locator(f'#contracts tr[data-contract="{cid}"]')
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row.locator(".phase")).to_have_text("await_accept", timeout=WAIT_MS)


def save_screenshot(page: Any, tmp_path: Path) -> None:
    """To tmp_path, and to TALLY_SCREENSHOT too when it is set."""
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    target = os.environ.get("TALLY_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "dashboard.png", target)
