"""First start of a cluster: node and account keys, genesis, admin token, in data_dir."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from consensus.pbft.config import PbftConfig
from consensus.pow.config import PowConfig
from ledger.block import Genesis, Member
from ledger.crypto import KeyPair
from ledger.encoding import DecodeError
from node.cluster.config import ClusterConfig, ConfigError


def ensure_initialized(cfg: ClusterConfig) -> Genesis:
    """Create keys and genesis on first start; afterwards check they still match the config."""
    if cfg.genesis_path.exists():
        genesis = load_genesis(cfg)
        ids = [m.node_id for m in genesis.members]
        if ids != cfg.node_ids():
            raise ConfigError(
                f"{cfg.data_dir} holds a chain for nodes {ids}, but {cfg.path.name} lists "
                f"{cfg.node_ids()}; use another data_dir or start over with `tally up --fresh`"
            )
        return genesis
    members = tuple(Member(n.id, _key(cfg.node_key_path(n.id)).public_key) for n in cfg.nodes)
    balances = {_key(cfg.account_key_path(a)).address.hex(): v for a, v in cfg.accounts.items()}
    chain_id = f"{cfg.name}-{secrets.token_hex(4)}"
    genesis = Genesis(chain_id, int(time.time() * 1000), members, balances)
    _write_private(cfg.admin_token_path, secrets.token_hex(16).encode())
    _write_private(cfg.genesis_path, genesis.encode())
    return genesis


def load_genesis(cfg: ClusterConfig) -> Genesis:
    try:
        return Genesis.decode(cfg.genesis_path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no genesis at {cfg.genesis_path}: run `tally up` first") from None
    except DecodeError as e:
        raise ConfigError(f"{cfg.genesis_path} is corrupt: {e}") from None


def pbft_config(cfg: ClusterConfig, genesis: Genesis) -> PbftConfig:
    return PbftConfig.of(genesis.chain_id, genesis.members, cfg.pbft)


def pow_config(cfg: ClusterConfig, genesis: Genesis) -> PowConfig:
    return PowConfig.of(genesis.chain_id, genesis.members, cfg.pow)


def load_key(path: Path) -> KeyPair:
    try:
        return KeyPair(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        raise ConfigError(f"no key at {path}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a hex key") from None


def _key(path: Path) -> KeyPair:
    """Load the key at `path`, generating it first if absent (keys survive a genesis reset)."""
    if not path.exists():
        _write_private(path, KeyPair.generate().seed.hex().encode())
    return load_key(path)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
