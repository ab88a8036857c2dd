"""Named accounts of a cluster (keys in data_dir) and address parsing for the CLI."""

from __future__ import annotations

from ledger.crypto import ADDRESS_SIZE, KeyPair
from node.cluster.bootstrap import load_key
from node.cluster.config import ClusterConfig, ConfigError


def account_key(cfg: ClusterConfig, name: str) -> KeyPair:
    path = cfg.account_key_path(name)
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.key"))
        raise ConfigError(f"no account named {name!r} in {cfg.data_dir} (known: {known})")
    return load_key(path)


def signer_key(cfg: ClusterConfig, name: str) -> KeyPair:
    """An account's key, or a member node's (members sign as auditors, for instance)."""
    if name in cfg.node_ids():
        return load_key(cfg.node_key_path(name))
    return account_key(cfg, name)


def resolve_address(cfg: ClusterConfig, name_or_address: str) -> bytes:
    """A 40-hex-digit address, a member node's id, or the name of an account whose key is in
    data_dir."""
    text = name_or_address.removeprefix("0x")
    if len(text) == 2 * ADDRESS_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return signer_key(cfg, name_or_address).address


def known_names(cfg: ClusterConfig) -> dict[str, str]:
    """Address (hex) -> name, for every account and member whose key is in data_dir."""
    names = {}
    for name in [*cfg.accounts, *cfg.node_ids()]:
        try:
            names[signer_key(cfg, name).address.hex()] = name
        except (ConfigError, OSError):
            continue  # no key made yet
    return names
