"""Contract terms and design-command runs the tests share."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

import pytest


def lamp_offer(counterparty: bytes, window_s: int) -> dict[str, Any]:
    """A seller's exchange offer with no deposits and every window `window_s` seconds of
    ledger time: the smallest contract that has deadlines."""
    return {
        "role": "seller",
        "counterparty": counterparty,
        "item": "a lamp",
        "price": 100,
        "deposit_seller": 0,
        "deposit_buyer": 0,
        "table": [100, 0, 0] * 8,
        "windows": [window_s] * 5,
    }


def design_cli(
    module: ModuleType, capsys: pytest.CaptureFixture[str] | None, *argv: str
) -> tuple[int, str]:
    """Run `tally design ARGV` in this process through one node/cli/design_*.py module's
    own parser: its exit code and (with capsys) what it printed."""
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="design_kind"))
    code = int(module.cmd(parser.parse_args(list(argv))))
    return code, capsys.readouterr().out if capsys else ""
