"""What the CLI prints: tables on a console, or JSON with --json."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

# Piped output (logs, CI) has no terminal width: use one that fits the status table.
console = Console() if sys.stdout.isatty() else Console(width=120)
err = Console(stderr=True)


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], None]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        render(data)
