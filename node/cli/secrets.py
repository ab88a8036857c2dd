"""Secrets a party keeps until it reveals them: made and stored (mode 0600, fsynced) in the
cluster's data directory before anything that depends on them is sent, so a crash after
sending cannot lose one, and a retry reuses it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from node.cluster.config import ClusterConfig, ConfigError


def secret_path(cfg: ClusterConfig, name: str) -> Path:
    return cfg.data_dir / "secrets" / name


def keep(cfg: ClusterConfig, name: str, make: Callable[[], str]) -> str:
    """The stored secret `name`, made by `make` and stored first if there is none yet."""
    path = secret_path(cfg, name)
    if path.exists():
        return path.read_text().strip()
    text = make()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return text


def load(cfg: ClusterConfig, name: str, what: str) -> str:
    path = secret_path(cfg, name)
    if not path.exists():
        raise ConfigError(f"no secret for {what} ({path}): was it committed from this machine?")
    return path.read_text().strip()
