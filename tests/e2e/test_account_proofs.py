"""`get_account` with `proof: true` on a live node (issue 18): the answer proves the account
under the state root of a committed block, now and at an older height, and
`ledger.state.verify_account` checks it offline against that block's header alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger.crypto import KeyPair
from ledger.state import Account, StateProof, verify_account
from ledger.tx import transfer
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient, RpcError
from tests.helpers.livecluster import live_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("proofs")
    with live_cluster(directory, "proofs", {"alice": 1_000, "bob": 0}, {}) as cfg:
        yield cfg


def checked(answer: dict[str, Any], state_root_hex: str) -> bool:
    """What a light client does: trust only the block header's state root."""
    account = Account(bytes.fromhex(answer["address"]), answer["balance"], answer["nonce"])
    proof = StateProof.decode(bytes.fromhex(answer["proof"]))
    return verify_account(bytes.fromhex(state_root_hex), account, proof)


async def test_an_account_is_proved_under_a_committed_state_root_now_and_before(
    cluster: ClusterConfig,
) -> None:
    alice, bob = account_key(cluster, "alice"), account_key(cluster, "bob")
    chain_id = load_genesis(cluster).chain_id
    async with RpcClient(cluster.nodes[0].rpc_url) as client:
        paid = transfer(alice, chain_id, 0, bob.address, 7)
        done = await client.call("submit_tx", tx=paid.encode().hex(), wait="commit")
        height = done["height"]
        now = await client.call("get_account", address=bob.address.hex(), proof=True)
        before = await client.call(
            "get_account", address=bob.address.hex(), proof=True, height=height - 1
        )
        blocks = [await client.call("get_block", height=h) for h in (now["height"], height - 1)]
        stranger = KeyPair(bytes([0x77]) * 32).address.hex()
        absent = await client.call("get_account", address=stranger, proof=True)
        with pytest.raises(RpcError, match="no block at height"):
            await client.call("get_account", address=stranger, height=10**6)
        with pytest.raises(RpcError, match="no block at height"):
            await client.call("get_account", address=stranger, height=-1)
        with pytest.raises(RpcError, match="invalid param 'proof'"):
            await client.call("get_account", address=stranger, proof="yes")
    assert (now["balance"], before["balance"]) == (7, 0)
    assert (now["height"], before["height"]) == (blocks[0]["height"], height - 1)
    assert checked(now, blocks[0]["state_root"]) and checked(before, blocks[1]["state_root"])
    assert not checked(now | {"balance": 8}, blocks[0]["state_root"])  # a lie is caught
    assert not checked(now, blocks[1]["state_root"])  # against another block's root
    assert not checked(before | {"balance": 7}, blocks[1]["state_root"])
    assert (absent["balance"], absent["nonce"]) == (0, 0) and checked(absent, now["state_root"])
