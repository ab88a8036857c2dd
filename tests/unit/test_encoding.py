"""The canonical encoding (ledger/encoding.py): golden vectors, round-trips, rejection.

Every byte string that is hashed, signed or sent goes through this encoding, so a
change to it forks the chain.  The golden vectors below pin exact bytes and hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.messages import Blocks, FetchBlocks, ForwardTxs
from consensus.pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Status,
    ViewChange,
)
from consensus.pow.seal import PowSeal, PowTip, PowWork
from contracts.exchange import Exchange, ExchangeMove
from contracts.kernel.engine import Sealed, SealedEvent
from contracts.risk_sharing import Lottery, RiskEvent, RiskSharing, Schedule
from ledger.block import Batch, BatchHeader, Block, BlockHeader, Genesis, Member, tx_root
from ledger.contract import NO_ENGINES, ContractRecord
from ledger.crypto import KeyPair, address_of, verify
from ledger.encoding import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    SIGNING_BIT,
    DecodeError,
    Struct,
    Tag,
    decode_any,
    pack,
    unpack,
)
from ledger.merkle import EMPTY_ROOT
from ledger.smt import Proof
from ledger.state import Account, Receipt, State, StateProof
from ledger.tx import Tx, transfer
from node.transport.auth import Hello
from node.transport.envelope import Envelope

# ---------------------------------------------------------------------------
# Golden vectors.  Computed once and pasted: if any of these change, every
# existing chain's hashes and signatures change with them.

ALICE = KeyPair(bytes([1]) * 32)
BOB = KeyPair(bytes([2]) * 32)
CHAIN = "tally-golden"

ALICE_PUBLIC_KEY_HEX = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
ALICE_ADDRESS_HEX = "7fb1fd672504efbebd3bcc657a90d4ed4513c735"
BOB_ADDRESS_HEX = "2e7745706ead31d1c5e332b014f5a97282e4029f"
EMPTY_ROOT_HEX = "beead77994cf573341ec17b58bbf7eb34d2711c993c1d976b128b3188dc1829a"

GOLDEN_SIGNATURE_HEX = (
    "53bcd571f7fa4b271c97258c2343401ed78432a47f91013c1b22e1d8c1d35c52"
    "3808089f90a214ca186ce0629b4a92a8458f9d3e1ec4f818f5d1860f09870809"
)
GOLDEN_TX_SIGNING_HEX = (
    "8195ac74616c6c792d676f6c64656ec4208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf374"
    "8801b40f6f5c07a87472616e7366657282a6616d6f756e74cd04d2a2746fc4142e7745706ead31d1c5e332"
    "b014f5a97282e4029f"
)
GOLDEN_TX_HEX = (
    "0196ac74616c6c792d676f6c64656ec4208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf374"
    "8801b40f6f5c07a87472616e7366657282a6616d6f756e74cd04d2a2746fc4142e7745706ead31d1c5e332"
    "b014f5a97282e4029fc440" + GOLDEN_SIGNATURE_HEX
)
GOLDEN_TX_ID_HEX = "1939519e6c4c27abdf760739a5fd5242f353043a7003af10ee99901fb2b7eae0"
GOLDEN_TX_ROOT_HEX = "962f9518d1817910a79fc9e2b67965223ebd8d8e9fa674a300451ec5e4818ab6"
# Header fields in order: chain_id, height, parent, timestamp_ms (uint64 1_700_000_000_000),
# proposed_ms (uint64 1_699_999_999_500), proposer, tx_root, receipts_root, state_root.
GOLDEN_HEADER_HEX = (
    "0299ac74616c6c792d676f6c64656e05c420" + "03" * 32 + "cf0000018bcfe56800cf0000018bcfe5660c"
    "a66e6f64652d30c420962f9518d1817910a79fc9e2b67965223ebd8d8e9fa674a300451ec5e4818ab6"
    "c420" + "04" * 32 + "c420" + "05" * 32
)
GOLDEN_BLOCK_HASH_HEX = "f804f306ffab22e1424de921bf5644727fde2dc146444558324953611027124d"
GOLDEN_BLOCK_HEX = "0393c4b1" + GOLDEN_HEADER_HEX + "91c4a1" + GOLDEN_TX_HEX + "c400"
GOLDEN_BLOCK_SHA256_HEX = "adc9a02c3971163d0c41680000b5d1fafbcb3cd61d56f7ea9547993128a6c0fc"
# The batch the golden block executed: chain_id, height, proposer, proposed_ms, txs.  Its
# digest is the sha256 of the BatchHeader (same fields with tx_root in place of the txs).
GOLDEN_BATCH_HEX = (
    "0b95ac74616c6c792d676f6c64656e05a66e6f64652d30cf0000018bcfe5660c91c4a1" + GOLDEN_TX_HEX
)
GOLDEN_BATCH_HEADER_HEX = (
    "0c95ac74616c6c792d676f6c64656e05a66e6f64652d30cf0000018bcfe5660cc420" + GOLDEN_TX_ROOT_HEX
)
GOLDEN_BATCH_DIGEST_HEX = "aec318db19a145b153a6225b07b88f854e571f545807de59595b1463df65e583"
GOLDEN_BATCH_SHA256_HEX = "a25e2c1d1cb844a2166528c81afe2b6b19ba925ddf788c229807fa2cdfa40b45"
GOLDEN_PROPOSED_MS = 1_699_999_999_500


def golden_tx() -> Tx:
    return transfer(ALICE, CHAIN, 7, BOB.address, 1234)


def golden_block() -> Block:
    tx = golden_tx()
    header = BlockHeader(
        chain_id=CHAIN,
        height=5,
        parent=bytes([3]) * 32,
        timestamp_ms=1_700_000_000_000,
        proposed_ms=GOLDEN_PROPOSED_MS,
        proposer="node-0",
        tx_root=tx_root((tx,)),
        receipts_root=bytes([4]) * 32,
        state_root=bytes([5]) * 32,
    )
    return Block(header, (tx,), b"")


def golden_batch() -> Batch:
    return Batch(CHAIN, 5, "node-0", GOLDEN_PROPOSED_MS, (golden_tx(),))


def test_golden_keys_and_addresses() -> None:
    assert ALICE.public_key.hex() == ALICE_PUBLIC_KEY_HEX
    assert address_of(ALICE.public_key).hex() == ALICE_ADDRESS_HEX
    assert ALICE.address.hex() == ALICE_ADDRESS_HEX
    assert BOB.address.hex() == BOB_ADDRESS_HEX
    # The definition, independently: sha256(ADDRESS tag || public key), first 20 bytes.
    assert address_of(ALICE.public_key) == hashlib.sha256(b"\x09" + ALICE.public_key).digest()[:20]


def test_golden_empty_merkle_root() -> None:
    assert EMPTY_ROOT.hex() == EMPTY_ROOT_HEX
    assert hashlib.sha256(b"\x08").digest() == EMPTY_ROOT


GOLDEN_EMPTY_STATE_ROOT_HEX = "0ddf52f3760fd95d407cfc4885e020be4d3226b4c0c35615ff3edc8b02e4054b"
GOLDEN_ONE_ACCOUNT_STATE_ROOT_HEX = (
    "2ef14a942ce915dc6df2f1cda36eaa6a04c5f57dc557cacb8c9c4c0d410936fa"
)
GOLDEN_STATE_ROOT_HEX = "b433c0d7632132da514d1a97b08b9ef57b0912a6541ce1a0f45ffb9aca3cc127"


def test_golden_state_roots() -> None:
    """The state root (ledger/state.py) over its two sparse Merkle trees (ledger/smt.py)."""
    sha = hashlib.sha256
    empty_tree = sha(b"\x2c").digest()  # SMT_NODE tag alone
    assert State(engines=NO_ENGINES).root().hex() == GOLDEN_EMPTY_STATE_ROOT_HEX
    assert sha(b"\x2e" + empty_tree + empty_tree).hexdigest() == GOLDEN_EMPTY_STATE_ROOT_HEX
    alice = Account(ALICE.address, 1000, 3)
    one = State({ALICE.address: alice}, engines=NO_ENGINES)
    # Independently: a lone leaf is the tree's root; it is named by its key and value hash.
    key = sha(bytes([Tag.ACCOUNT]) + ALICE.address).digest()
    leaf = sha(b"\x2b" + key + sha(alice.encode()).digest()).digest()
    assert sha(b"\x2e" + leaf + empty_tree).hexdigest() == GOLDEN_ONE_ACCOUNT_STATE_ROOT_HEX
    assert one.root().hex() == GOLDEN_ONE_ACCOUNT_STATE_ROOT_HEX
    cid = bytes([9]) * 32
    both = State(
        {ALICE.address: alice, BOB.address: Account(BOB.address, 5, 0)},
        {cid: ContractRecord(cid, "exchange", b"x", 50, True)},
        engines=NO_ENGINES,
    )
    assert both.root().hex() == GOLDEN_STATE_ROOT_HEX


def test_golden_tx() -> None:
    tx = golden_tx()
    assert tx.signature.hex() == GOLDEN_SIGNATURE_HEX
    assert tx.signing_bytes().hex() == GOLDEN_TX_SIGNING_HEX
    assert tx.encode().hex() == GOLDEN_TX_HEX
    assert tx.sha256().hex() == GOLDEN_TX_ID_HEX
    assert tx.tx_id.hex() == GOLDEN_TX_ID_HEX
    assert hashlib.sha256(bytes.fromhex(GOLDEN_TX_HEX)).hexdigest() == GOLDEN_TX_ID_HEX
    assert Tx.decode(bytes.fromhex(GOLDEN_TX_HEX)) == tx
    assert tx_root((tx,)).hex() == GOLDEN_TX_ROOT_HEX


def test_golden_block() -> None:
    block = golden_block()
    assert block.header.encode().hex() == GOLDEN_HEADER_HEX
    assert block.hash.hex() == GOLDEN_BLOCK_HASH_HEX
    assert block.header.sha256().hex() == GOLDEN_BLOCK_HASH_HEX
    assert block.encode().hex() == GOLDEN_BLOCK_HEX
    assert block.sha256().hex() == GOLDEN_BLOCK_SHA256_HEX
    assert Block.decode(bytes.fromhex(GOLDEN_BLOCK_HEX)) == block
    # The block hash covers the header only: the proof can be attached afterwards.
    assert block.with_proof(b"certificate").hash.hex() == GOLDEN_BLOCK_HASH_HEX
    assert block.with_proof(b"certificate").sha256().hex() != GOLDEN_BLOCK_SHA256_HEX


def test_golden_batch_digest() -> None:
    batch = golden_batch()
    assert batch.encode().hex() == GOLDEN_BATCH_HEX
    assert batch.sha256().hex() == GOLDEN_BATCH_SHA256_HEX
    assert Batch.decode(bytes.fromhex(GOLDEN_BATCH_HEX)) == batch
    header = BatchHeader(CHAIN, 5, "node-0", GOLDEN_PROPOSED_MS, tx_root(batch.txs))
    assert header.encode().hex() == GOLDEN_BATCH_HEADER_HEX
    # The digest is the hash of the batch header, not of the batch's own encoding.
    assert batch.digest.hex() == GOLDEN_BATCH_DIGEST_HEX
    assert hashlib.sha256(bytes.fromhex(GOLDEN_BATCH_HEADER_HEX)).hexdigest() == (
        GOLDEN_BATCH_DIGEST_HEX
    )
    assert Batch.decode(bytes.fromhex(GOLDEN_BATCH_HEX)).digest.hex() == GOLDEN_BATCH_DIGEST_HEX
    # ... and a block header yields the digest of the batch it executed.
    assert golden_block().header.batch_digest().hex() == GOLDEN_BATCH_DIGEST_HEX


def test_batch_digest_covers_what_was_ordered_and_not_the_execution() -> None:
    header = golden_block().header
    digest = header.batch_digest()
    # What execution decides (and where the block sits) is not part of the batch.
    for change in (
        {"parent": bytes(32)},
        {"timestamp_ms": 1},
        {"receipts_root": bytes(32)},
        {"state_root": bytes(32)},
    ):
        assert dataclasses.replace(header, **change).batch_digest() == digest
    # Everything the primary proposed is.
    for change in (
        {"chain_id": "other"},
        {"height": 6},
        {"proposer": "node-1"},
        {"proposed_ms": GOLDEN_PROPOSED_MS + 1},
        {"tx_root": EMPTY_ROOT},
    ):
        assert dataclasses.replace(header, **change).batch_digest() != digest
    batch = golden_batch()
    for batch_change in (
        {"chain_id": "other"},
        {"height": 6},
        {"proposer": "node-1"},
        {"proposed_ms": GOLDEN_PROPOSED_MS + 1},
        {"txs": ()},
        {"txs": (golden_tx(), golden_tx())},
    ):
        assert dataclasses.replace(batch, **batch_change).digest != batch.digest


def test_golden_vectors_are_fresh_computations() -> None:
    """Encodings are cached per instance; equal fresh instances must give the pinned bytes."""
    fresh = Tx(CHAIN, ALICE.public_key, 7, "transfer", {"amount": 1234, "to": BOB.address}, b"")
    fresh = dataclasses.replace(fresh, signature=bytes.fromhex(GOLDEN_SIGNATURE_HEX))
    assert fresh.encode().hex() == GOLDEN_TX_HEX
    assert verify(ALICE.public_key, fresh.signing_bytes(), fresh.signature)


# ---------------------------------------------------------------------------
# Round-trips for every message type.

INTS = st.integers(min_value=MIN_INT, max_value=MAX_INT)
TEXT = st.text(max_size=12)
BYTES = st.binary(max_size=40)
PLAIN: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | INTS | TEXT | BYTES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
PAYLOADS = st.dictionaries(TEXT, PLAIN, max_size=4)


def tuples(strategy: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return st.lists(strategy, max_size=max_size).map(tuple)


TXS = st.builds(Tx, TEXT, BYTES, INTS, TEXT, PAYLOADS, BYTES)
HEADERS = st.builds(BlockHeader, TEXT, INTS, BYTES, INTS, INTS, TEXT, BYTES, BYTES, BYTES)
BLOCKS = st.builds(Block, HEADERS, tuples(TXS), BYTES)
BATCHES = st.builds(Batch, TEXT, INTS, TEXT, INTS, tuples(TXS))
BATCH_HEADERS = st.builds(BatchHeader, TEXT, INTS, TEXT, INTS, BYTES)
MEMBERS = st.builds(Member, TEXT, BYTES)
GENESIS_ACCOUNTS = st.dictionaries(
    st.binary(min_size=20, max_size=20).map(bytes.hex), st.integers(0, 2**40), max_size=4
)
GENESES = st.builds(Genesis, TEXT, INTS, st.lists(MEMBERS, max_size=3).map(tuple), GENESIS_ACCOUNTS)
ACCOUNTS = st.builds(Account, BYTES, INTS, INTS)
RECEIPTS = st.builds(Receipt, BYTES, TEXT)
PRE_PREPARES_BARE = st.builds(PrePrepare, INTS, INTS, BYTES, INTS, BYTES, st.none())
PRE_PREPARES_WITH_BATCH = st.builds(PrePrepare, INTS, INTS, BYTES, INTS, BYTES, BATCHES)
PREPARES = st.builds(Prepare, INTS, INTS, BYTES, INTS, BYTES)
COMMITS = st.builds(Commit, INTS, INTS, BYTES, INTS, BYTES)
FORWARDS = st.builds(ForwardTxs, tuples(TXS))
CERTIFICATES = st.builds(CommitCertificate, INTS, INTS, BYTES, tuples(COMMITS, 4))
HELLOS = st.builds(Hello, TEXT, TEXT, TEXT, BYTES, BYTES)
ENVELOPES = st.builds(
    Envelope, TEXT, TEXT, TEXT, INTS, INTS, INTS, st.lists(BYTES, max_size=4).map(tuple), BYTES
)
CONTRACT_RECORDS = st.builds(ContractRecord, BYTES, TEXT, BYTES, INTS, st.booleans())
EXCHANGE_MOVES = st.builds(ExchangeMove, INTS, TEXT, TEXT, BYTES)
EXCHANGES = st.builds(
    Exchange,
    BYTES,
    BYTES,
    TEXT,
    TEXT,
    INTS,
    INTS,
    INTS,
    st.lists(INTS, max_size=4).map(tuple),
    st.lists(INTS, max_size=5).map(tuple),
    TEXT,
    INTS,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.lists(EXCHANGE_MOVES, max_size=2).map(tuple),
)
LOTTERIES = st.builds(Lottery, INTS, tuples(INTS), INTS, tuples(INTS))
SCHEDULES = st.builds(Schedule, tuples(INTS), tuples(INTS), INTS, INTS, tuples(LOTTERIES, 2))
RISK_EVENTS = st.builds(RiskEvent, INTS, INTS, TEXT, TEXT, BYTES, INTS, BYTES, TEXT)
RISK_SHARINGS = st.builds(
    RiskSharing,
    BYTES,
    BYTES,
    BYTES,
    SCHEDULES,
    INTS,
    tuples(INTS, 5),
    INTS,
    INTS,
    tuples(INTS, 2),
    INTS,
    TEXT,
    INTS,
    tuples(BYTES, 2),
    tuples(BYTES, 2),
    tuples(INTS),
    INTS,
    tuples(RISK_EVENTS, 2),
)
PROOFS = st.builds(Proof, tuples(BYTES, 4), st.none() | BYTES, st.none() | BYTES)
SEALED_EVENTS = st.builds(SealedEvent, INTS, TEXT, INTS, BYTES, INTS, BYTES)
TERMS = st.dictionaries(TEXT, PLAIN, max_size=3)
SEALEDS = st.builds(
    Sealed,
    BYTES,
    tuples(BYTES),
    TERMS,
    INTS,
    tuples(INTS, 2),
    TEXT,
    INTS,
    tuples(INTS),
    tuples(BYTES),
    tuples(BYTES),
    tuples(BYTES),
    TERMS,
    tuples(SEALED_EVENTS, 2),
)
POW_WORKS = st.builds(PowWork, BYTES, INTS, BYTES)
POW_SEALS = st.builds(PowSeal, INTS, BYTES, BYTES)
POW_TIPS = st.builds(PowTip, INTS, BYTES, BYTES)
CHECKPOINTS = st.builds(Checkpoint, INTS, BYTES, BYTES, INTS, BYTES)
# View changes nest pre-prepares, batches and txs: keep the inner lists short.
PREPARED_CERTS = st.builds(
    PreparedCert, PRE_PREPARES_BARE | PRE_PREPARES_WITH_BATCH, tuples(PREPARES)
)
VIEW_CHANGES = st.builds(
    ViewChange, INTS, INTS, tuples(CHECKPOINTS), tuples(PREPARED_CERTS, 2), INTS, BYTES
)
NEW_VIEWS = st.builds(
    NewView,
    INTS,
    tuples(VIEW_CHANGES, 2),
    tuples(PRE_PREPARES_BARE | PRE_PREPARES_WITH_BATCH, 2),
    INTS,
    BYTES,
)
STATUSES = st.builds(Status, INTS, st.booleans(), INTS, INTS, INTS, BYTES)
FETCHES = st.builds(FetchBlocks, INTS, INTS)
BLOCK_LISTS = st.builds(Blocks, tuples(BLOCKS, 2))
STATE_PROOFS = st.builds(StateProof, BYTES, BYTES, PROOFS)

ROUND_TRIP_CASES: list[tuple[type[Struct], st.SearchStrategy[Any]]] = [
    (Tx, TXS),
    (BlockHeader, HEADERS),
    (Block, BLOCKS),
    (Batch, BATCHES),
    (BatchHeader, BATCH_HEADERS),
    (Member, MEMBERS),
    (Genesis, GENESES),
    (Account, ACCOUNTS),
    (Receipt, RECEIPTS),
    (PrePrepare, PRE_PREPARES_BARE),
    (PrePrepare, PRE_PREPARES_WITH_BATCH),
    (Prepare, PREPARES),
    (Commit, COMMITS),
    (Checkpoint, CHECKPOINTS),
    (PreparedCert, PREPARED_CERTS),
    (ViewChange, VIEW_CHANGES),
    (NewView, NEW_VIEWS),
    (Status, STATUSES),
    (ForwardTxs, FORWARDS),
    (FetchBlocks, FETCHES),
    (Blocks, BLOCK_LISTS),
    (CommitCertificate, CERTIFICATES),
    (Hello, HELLOS),
    (Envelope, ENVELOPES),
    (ContractRecord, CONTRACT_RECORDS),
    (ExchangeMove, EXCHANGE_MOVES),
    (Exchange, EXCHANGES),
    (Lottery, LOTTERIES),
    (Schedule, SCHEDULES),
    (RiskEvent, RISK_EVENTS),
    (RiskSharing, RISK_SHARINGS),
    (SealedEvent, SEALED_EVENTS),
    (Proof, PROOFS),
    (StateProof, STATE_PROOFS),
    (Sealed, SEALEDS),
    (PowWork, POW_WORKS),
    (PowSeal, POW_SEALS),
    (PowTip, POW_TIPS),
]


def rebuild(value: Any) -> Any:
    """A deep copy with fresh Struct instances, so no cached encoding is reused."""
    if isinstance(value, Struct):
        fields = dataclasses.fields(value)  # type: ignore[arg-type]
        return type(value)(**{f.name: rebuild(getattr(value, f.name)) for f in fields})
    if isinstance(value, tuple):
        return tuple(rebuild(v) for v in value)
    return value


def test_every_tag_is_covered_by_the_round_trips() -> None:
    covered = {cls.TAG for cls, _ in ROUND_TRIP_CASES}
    uncovered = set(HASH_PREFIXES)
    assert covered | uncovered == set(Tag)


@pytest.mark.parametrize(
    ("cls", "strategy"),
    ROUND_TRIP_CASES,
    ids=[
        f"{cls.__name__}{'-bare' if s is PRE_PREPARES_BARE else ''}" for cls, s in ROUND_TRIP_CASES
    ],
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(
    cls: type[Struct], strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    message = data.draw(strategy)
    encoded = message.encode()
    assert encoded[0] == cls.TAG

    decoded = cls.decode(encoded)
    assert type(decoded) is cls
    assert decoded == message

    via_any = decode_any(encoded)
    assert type(via_any) is cls
    assert via_any == message

    # Re-encoding from scratch (no cached bytes anywhere) gives the identical bytes.
    assert rebuild(decoded).encode() == encoded
    assert rebuild(message).encode() == encoded
    assert rebuild(decoded).sha256() == hashlib.sha256(encoded).digest()


# ---------------------------------------------------------------------------
# Rejection of everything that is not the canonical encoding.


def array(parts: list[bytes]) -> bytes:
    """A msgpack fixarray header followed by already-encoded items."""
    assert len(parts) < 16
    return bytes([0x90 | len(parts)]) + b"".join(parts)


def fixmap(pairs: list[tuple[bytes, bytes]]) -> bytes:
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def tx_parts(**raw: bytes) -> list[bytes]:
    """The six encoded fields of the golden tx, with some replaced by hand-built msgpack."""
    tx = golden_tx()
    parts = {
        "chain_id": pack(tx.chain_id),
        "sender": pack(tx.sender),
        "nonce": pack(tx.nonce),
        "kind": pack(tx.kind),
        "payload": pack(tx.payload),
        "signature": pack(tx.signature),
    }
    parts.update(raw)
    return list(parts.values())


def raw_tx(**raw: bytes) -> bytes:
    return bytes([Tag.TX]) + array(tx_parts(**raw))


def raw_payload(amount: bytes, *, first: str = "amount") -> bytes:
    """A transfer payload map with a hand-encoded amount, keys in the given order."""
    pairs = [(pack("amount"), amount), (pack("to"), pack(BOB.address))]
    return fixmap(pairs if first == "amount" else pairs[::-1])


def raw_block(tx_bytes: bytes) -> bytes:
    block = golden_block()
    return bytes([Tag.BLOCK]) + array(
        [pack(block.header.encode()), array([pack(tx_bytes)]), pack(b"")]
    )


def test_hand_built_encodings_match_the_real_ones() -> None:
    """The builders used below produce the canonical bytes when nothing is replaced."""
    assert raw_tx() == golden_tx().encode()
    assert raw_tx(payload=raw_payload(pack(1234))) == golden_tx().encode()
    assert raw_block(golden_tx().encode()) == golden_block().encode()
    assert Tx.decode(raw_tx()) == golden_tx()


def raw_status(active: bytes, view: bytes = pack(3)) -> bytes:
    """A Status (view, active, height, stable_seq, replica, signature) with hand-built fields."""
    return bytes([Tag.STATUS]) + array([view, active, pack(9), pack(8), pack(1), pack(b"s" * 64)])


U64_TOO_BIG = b"\xcf" + (2**63).to_bytes(8, "big")

REJECTED: dict[str, bytes] = {
    # trailing bytes, at the top level and inside an embedded struct
    "trailing-byte": golden_tx().encode() + b"\x00",
    "trailing-nil": golden_tx().encode() + b"\xc0",
    "trailing-in-embedded-tx": raw_block(golden_tx().encode() + b"\xc0"),
    # map keys out of order / duplicated
    "unsorted-payload-keys": raw_tx(payload=raw_payload(pack(1234), first="to")),
    "duplicate-payload-key": raw_tx(
        payload=fixmap([(pack("amount"), pack(1)), (pack("amount"), pack(1234))])
    ),
    # non-minimal encodings
    "non-minimal-uint16-5": raw_tx(payload=raw_payload(b"\xcd\x00\x05")),
    "non-minimal-uint8-5": raw_tx(payload=raw_payload(b"\xcc\x05")),
    "non-minimal-int64": raw_tx(payload=raw_payload(b"\xd3" + (1234).to_bytes(8, "big"))),
    "non-minimal-nonce": raw_tx(nonce=b"\xcd\x00\x07"),
    "non-minimal-str8": raw_tx(kind=b"\xd9\x08transfer"),
    "non-minimal-bin16": raw_tx(sender=b"\xc5\x00\x20" + ALICE.public_key),
    "non-minimal-array16": bytes([Tag.TX]) + b"\xdc\x00\x06" + b"".join(tx_parts()),
    "non-minimal-map16": raw_tx(
        payload=b"\xde\x00\x02" + pack("amount") + pack(1234) + pack("to") + pack(BOB.address)
    ),
    "non-minimal-int-in-embedded-tx": raw_block(
        raw_tx(payload=raw_payload(b"\xce\x00\x00\x04\xd2"))
    ),
    # integers outside the signed 64-bit range
    "uint64-above-max-int": raw_tx(nonce=U64_TOO_BIG),
    # floats anywhere
    "float64-amount": raw_tx(payload=raw_payload(b"\xcb" + struct.pack(">d", 1234.0))),
    "float32-amount": raw_tx(payload=raw_payload(b"\xca" + struct.pack(">f", 1234.0))),
    "float-nonce": raw_tx(nonce=b"\xcb" + struct.pack(">d", 7.0)),
    "float-top-level": bytes([Tag.TX]) + b"\xcb" + struct.pack(">d", 0.0),
    # extension types
    "ext-fixext1": raw_tx(payload=raw_payload(b"\xd4\x01\x00")),
    "ext-timestamp": raw_tx(payload=raw_payload(b"\xd6\xff\x00\x00\x00\x01")),
    "ext-as-signature": raw_tx(signature=b"\xc7\x01\x05\x00"),
    # non-str map keys
    "int-map-key": raw_tx(payload=fixmap([(pack(1), pack(2))])),
    "bytes-map-key": raw_tx(payload=fixmap([(pack(b"to"), pack(BOB.address))])),
    "nil-map-key": raw_tx(payload=fixmap([(b"\xc0", pack(2))])),
    "list-map-key": raw_tx(payload=fixmap([(array([pack(1)]), pack(2))])),
    "map-map-key": raw_tx(payload=fixmap([(fixmap([]), pack(2))])),
    # wrong tags
    "unknown-tag-0x7f": b"\x7f" + golden_tx().encode()[1:],
    "unknown-tag-0x00": b"\x00" + golden_tx().encode()[1:],
    "unknown-tag-0xff": b"\xff" + golden_tx().encode()[1:],
    "signing-bytes-are-not-a-message": golden_tx().signing_bytes(),
    # empty input and non-list bodies
    "empty": b"",
    "tag-only": bytes([Tag.TX]),
    "body-is-map": bytes([Tag.TX]) + fixmap([]),
    "body-is-int": bytes([Tag.TX]) + pack(1),
    # wrong number of fields
    "five-fields": bytes([Tag.TX]) + array(tx_parts()[:5]),
    "seven-fields": bytes([Tag.TX]) + array([*tx_parts(), pack(b"")]),
    "zero-fields": bytes([Tag.TX]) + array([]),
    # wrong field types
    "str-for-bytes-sender": raw_tx(sender=pack("x" * 32)),
    "bytes-for-str-chain": raw_tx(chain_id=pack(CHAIN.encode())),
    "bool-for-int-nonce": raw_tx(nonce=b"\xc3"),
    "nil-for-int-nonce": raw_tx(nonce=b"\xc0"),
    "int-for-bytes-signature": raw_tx(signature=pack(5)),
    "int-for-bool-active": raw_status(pack(1)),
    "zero-for-bool-active": raw_status(pack(0)),
    "nil-for-bool-active": raw_status(b"\xc0"),
    "bool-for-int-view": raw_status(b"\xc3", view=b"\xc3"),
    "list-for-map-payload": raw_tx(payload=array([])),
    "map-for-list-txs": bytes([Tag.BLOCK])
    + array([pack(golden_block().header.encode()), fixmap([]), pack(b"")]),
    "list-for-embedded-header": bytes([Tag.BLOCK])
    + array([array([]), array([pack(golden_tx().encode())]), pack(b"")]),
    "header-bytes-where-tx-expected": raw_block(golden_block().header.encode()),
    "str-for-embedded-tx": bytes([Tag.BLOCK])
    + array([pack(golden_block().header.encode()), array([pack("tx")]), pack(b"")]),
    # invalid UTF-8 in str
    "invalid-utf8-kind": raw_tx(kind=b"\xa2\xff\xfe"),
    "invalid-utf8-map-key": raw_tx(payload=fixmap([(b"\xa2\xc3\x28", pack(1))])),
    "surrogate-utf8": raw_tx(kind=b"\xa3\xed\xa0\x80"),
    # reserved byte 0xc1 (never used by msgpack)
    "reserved-0xc1": raw_tx(nonce=b"\xc1"),
}


@pytest.mark.parametrize("data", list(REJECTED.values()), ids=list(REJECTED))
def test_rejected_by_decode_any(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_any(data)


@pytest.mark.parametrize("data", list(REJECTED.values()), ids=list(REJECTED))
def test_rejected_by_typed_decode(data: bytes) -> None:
    """Whatever the bytes claim to be, Tx.decode and Block.decode refuse them with DecodeError."""
    for cls in (Tx, Block):
        with pytest.raises(DecodeError):
            cls.decode(data)


def test_wrong_tag_byte_for_the_expected_type() -> None:
    tx, block = golden_tx(), golden_block()
    with pytest.raises(DecodeError):
        Tx.decode(block.header.encode())
    with pytest.raises(DecodeError):
        Block.decode(tx.encode())
    with pytest.raises(DecodeError):
        BlockHeader.decode(block.encode())
    batch = golden_batch()
    header = BatchHeader(batch.chain_id, batch.height, batch.proposer, batch.proposed_ms, b"")
    with pytest.raises(DecodeError):
        BatchHeader.decode(batch.encode())
    with pytest.raises(DecodeError):
        Batch.decode(header.encode())
    with pytest.raises(DecodeError):  # a block is not the batch it executed
        Batch.decode(block.encode())
    # Same body with the tag swapped: a Prepare and a Commit have identical fields.
    prepare = Prepare(1, 2, b"d" * 32, 3, b"s" * 64)
    with pytest.raises(DecodeError):
        Commit.decode(prepare.encode())
    assert type(decode_any(prepare.encode())) is Prepare
    as_commit = bytes([Tag.COMMIT]) + prepare.encode()[1:]
    assert decode_any(as_commit) == Commit(1, 2, b"d" * 32, 3, b"s" * 64)


def test_bool_and_int_are_not_interchangeable() -> None:
    """Status.active is the one bool field of the protocol: only msgpack true/false fit it."""
    assert raw_status(b"\xc3") == Status(3, True, 9, 8, 1, b"s" * 64).encode()
    assert Status.decode(raw_status(b"\xc3")) == Status(3, True, 9, 8, 1, b"s" * 64)
    assert decode_any(raw_status(b"\xc2")) == Status(3, False, 9, 8, 1, b"s" * 64)
    for active in (pack(1), pack(0)):  # int where bool expected
        with pytest.raises(DecodeError):
            Status.decode(raw_status(active))
    with pytest.raises(DecodeError):
        Status.decode(raw_status(b"\xc3", view=b"\xc3"))  # bool where int expected
    with pytest.raises(DecodeError):
        Status.decode(raw_status(b"\xc0"))  # nil where bool expected
    # An int put in the bool field never comes back as a Status (refused on encode or decode).
    with pytest.raises(ValueError):
        Status.decode(Status(3, 1, 9, 8, 1, b"s" * 64).encode())  # type: ignore[arg-type]


def test_every_truncation_is_rejected() -> None:
    for data in (golden_block().encode(), golden_tx().encode()):
        for cut in range(len(data)):
            with pytest.raises(DecodeError):
                decode_any(data[:cut])


def test_min_and_max_int_are_accepted_and_one_beyond_is_not_encodable() -> None:
    for n in (MIN_INT, MAX_INT, -1, 0, 127, 128, -32, -33):
        account = Account(b"a", n, 0)
        assert Account.decode(account.encode()) == account
    for n in (MIN_INT - 1, MAX_INT + 1):
        with pytest.raises(ValueError):
            Account(b"a", n, 0).encode()


def test_unencodable_values_are_refused_on_encode() -> None:
    for bad in (1.5, {1: 2}, {b"k": 1}, object(), {"k": {2.0}}):
        with pytest.raises(ValueError):
            Tx(CHAIN, b"s", 0, "transfer", {"v": bad}, b"").encode()


# Decoding arbitrary bytes: either canonical (re-encodes to the same bytes) or DecodeError.


def golden_view_change() -> ViewChange:
    pre_prepare = PrePrepare(1, 5, golden_batch().digest, 1, b"s" * 64, golden_batch())
    prepared = PreparedCert(pre_prepare, (Prepare(1, 5, golden_batch().digest, 2, b"p" * 64),))
    checkpoint = Checkpoint(4, b"h" * 32, b"r" * 32, 3, b"c" * 64)
    return ViewChange(2, 4, (checkpoint,), (prepared,), 3, b"s" * 64)


GOLDEN_MESSAGES = [
    golden_tx().encode(),
    golden_block().encode(),
    golden_batch().encode(),
    PrePrepare(1, 2, golden_batch().digest, 0, b"s" * 64, golden_batch()).encode(),
    golden_view_change().encode(),
    Status(3, True, 9, 8, 1, b"s" * 64).encode(),
    Blocks((golden_block(),)).encode(),
    CommitCertificate(1, 2, b"d", (Commit(1, 2, b"d", 0, b"s"),)).encode(),
    Genesis(CHAIN, 5, (Member("n0", b"k"),), {"ab" * 20: 1, "cd" * 20: 2}).encode(),
    Hello(CHAIN, "n0", "n1", b"c" * 16, b"s" * 64).encode(),
]
HASH_PREFIXES = (
    Tag.MERKLE_LEAF,
    Tag.MERKLE_NODE,
    Tag.ADDRESS,
    Tag.SMT_LEAF,
    Tag.SMT_NODE,
    Tag.STATE_ROOT,
)
REGISTERED_TAGS = [t for t in Tag if t not in HASH_PREFIXES]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(GOLDEN_MESSAGES)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if op == "insert":
            data.insert(i, byte)
        elif i < len(data):
            if op == "set":
                data[i] = byte
            else:
                del data[i]
    return bytes(data)


ARBITRARY = st.one_of(
    st.binary(max_size=80),
    st.tuples(st.sampled_from(REGISTERED_TAGS), st.binary(max_size=80)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
    mutated(),
)


@settings(max_examples=400, deadline=None)
@given(ARBITRARY)
def test_arbitrary_bytes_decode_canonically_or_raise_decode_error(data: bytes) -> None:
    try:
        message = decode_any(data)
    except DecodeError:
        return
    assert rebuild(message).encode() == data
    assert type(message).decode(data) == message


@pytest.mark.parametrize("entry", ["decode_any", "Tx.decode", "Hello.decode"])
def test_deeply_nested_input_raises_decode_error(entry: str) -> None:
    depth = 900  # msgpack's C unpacker allows up to 1024 levels
    nested = b"\x91" * depth + b"\xc0"
    decoders = {"decode_any": decode_any, "Tx.decode": Tx.decode, "Hello.decode": Hello.decode}
    tag = Tag.HELLO if entry == "Hello.decode" else Tag.TX
    escaped: str | None = None
    try:
        decoders[entry](bytes([tag]) + nested)
    except DecodeError:
        pass
    except RecursionError as e:  # reported without its ~1000-frame traceback, which is slow
        escaped = f"RecursionError escaped instead of DecodeError: {e}"
    else:
        escaped = "deeply nested input was accepted"
    if escaped is not None:
        pytest.fail(escaped, pytrace=False)


def test_nesting_beyond_msgpack_stack_limit_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_any(bytes([Tag.TX]) + b"\x91" * 5000 + b"\xc0")


def nested(levels: int, innermost: Any) -> Any:
    """`levels` containers inside each other, the innermost being `innermost` (empty)."""
    value = innermost
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize("innermost", [[], {}], ids=["list", "map"])
def test_nesting_limit_is_exactly_max_depth_levels(innermost: Any) -> None:
    """Which messages are valid is consensus-critical, so the limit is pinned to the level:
    MAX_DEPTH nested containers are accepted, one more is refused, encoding and decoding."""
    assert MAX_DEPTH == 32
    empty = pack(innermost)
    deepest = b"\x91" * (MAX_DEPTH - 1) + empty
    assert pack(nested(MAX_DEPTH, innermost)) == deepest
    assert unpack(deepest) == nested(MAX_DEPTH, innermost)
    with pytest.raises(ValueError):
        pack(nested(MAX_DEPTH + 1, innermost))
    with pytest.raises(DecodeError):
        unpack(b"\x91" + deepest)

    # Inside a tx the field list and the payload map are the first two levels.
    tx = Tx(CHAIN, b"s", 0, "transfer", {"x": nested(MAX_DEPTH - 2, innermost)}, b"")
    assert Tx.decode(tx.encode()) == tx
    raw = raw_tx(payload=fixmap([(pack("x"), b"\x91" * (MAX_DEPTH - 3) + empty)]))
    assert decode_any(raw) == dataclasses.replace(golden_tx(), payload=tx.payload)
    too_deep = dataclasses.replace(tx, payload={"x": nested(MAX_DEPTH - 1, innermost)})
    with pytest.raises(ValueError):
        too_deep.encode()
    with pytest.raises(DecodeError):
        decode_any(raw_tx(payload=fixmap([(pack("x"), b"\x91" * (MAX_DEPTH - 2) + empty)])))


# ---------------------------------------------------------------------------
# Signing bytes: a separate domain, without the signature (and, for PrePrepare, the batch).


def test_tags_leave_room_for_the_signing_bit() -> None:
    values = [int(t) for t in Tag]
    assert len(values) == len(set(values))
    assert all(v < SIGNING_BIT for v in values)
    assert not {v | SIGNING_BIT for v in values} & set(values)


def test_tx_signing_bytes() -> None:
    tx = golden_tx()
    signing = tx.signing_bytes()
    assert signing != tx.encode()
    assert signing[0] == Tag.TX | SIGNING_BIT == 0x81
    assert tx.encode()[0] == Tag.TX
    assert signing == bytes([0x81]) + pack([tx.chain_id, tx.sender, tx.nonce, tx.kind, tx.payload])
    assert tx.signature not in signing
    # Same fields under the message tag would be the encoding of an unsigned 5-field list,
    # which no decoder accepts as a Tx.
    with pytest.raises(DecodeError):
        Tx.decode(bytes([Tag.TX]) + signing[1:])
    # The signature is over the signing bytes, never over the encoding.
    assert verify(tx.sender, signing, tx.signature)
    assert not verify(tx.sender, tx.encode(), tx.signature)
    # Changing the signature leaves the signing bytes alone; changing any signed field does not.
    resigned = dataclasses.replace(tx, signature=b"\x00" * 64)
    assert resigned.signing_bytes() == signing
    assert resigned.encode() != tx.encode()
    for change in (
        {"nonce": 8},
        {"chain_id": "other"},
        {"kind": "other"},
        {"payload": {"to": BOB.address, "amount": 1235}},
        {"sender": BOB.public_key},
    ):
        assert dataclasses.replace(tx, **change).signing_bytes() != signing


@pytest.mark.parametrize(
    "message",
    [
        Prepare(3, 9, b"d" * 32, 1, b"s" * 64),
        Commit(3, 9, b"d" * 32, 1, b"s" * 64),
        Hello(CHAIN, "n0", "n1", b"c" * 16, b"s" * 64),
        PrePrepare(3, 9, b"d" * 32, 1, b"s" * 64, None),
        Checkpoint(9, b"h" * 32, b"r" * 32, 1, b"s" * 64),
        ViewChange(4, 0, (), (), 1, b"s" * 64),
        NewView(4, (), (), 1, b"s" * 64),
        Status(3, True, 9, 8, 1, b"s" * 64),
    ],
    ids=lambda m: type(m).__name__,
)
def test_signed_messages_exclude_their_signature(message: Any) -> None:
    signing = message.signing_bytes()
    assert signing[0] == message.TAG | SIGNING_BIT
    assert signing != message.encode()
    assert b"s" * 64 not in signing
    assert dataclasses.replace(message, signature=b"other").signing_bytes() == signing
    with pytest.raises(DecodeError):
        decode_any(signing)


def test_pre_prepare_signing_bytes_exclude_the_batch() -> None:
    digest = golden_batch().digest
    bare = PrePrepare(3, 9, digest, 1, b"s" * 64, None)
    full = dataclasses.replace(bare, batch=golden_batch())
    other = dataclasses.replace(bare, batch=dataclasses.replace(golden_batch(), txs=()))
    assert len({bare.encode(), full.encode(), other.encode()}) == 3
    assert bare.signing_bytes() == full.signing_bytes() == other.signing_bytes()
    assert bare.signing_bytes() == bytes([Tag.PRE_PREPARE | SIGNING_BIT]) + pack([3, 9, digest, 1])
    assert golden_batch().encode() not in full.signing_bytes()
    assert golden_batch().encode() in full.encode()
    for change in ({"view": 4}, {"seq": 10}, {"digest": b"e" * 32}, {"replica": 2}):
        assert dataclasses.replace(full, **change).signing_bytes() != full.signing_bytes()


def test_view_change_and_new_view_signatures_cover_their_proofs() -> None:
    """Only a message's own signature is left out: the signed proofs it carries are signed."""
    vc = golden_view_change()
    (prepared,) = vc.prepared
    (checkpoint,) = vc.checkpoint_proof
    (prepare,) = prepared.prepares
    signing = vc.signing_bytes()
    assert prepared.encode() in signing and checkpoint.encode() in signing
    assert golden_batch().encode() in signing  # the prepared batch's body too
    swapped_prepare = PreparedCert(
        prepared.pre_prepare, (dataclasses.replace(prepare, signature=b"q" * 64),)
    )
    for change in (
        {"new_view": 3},
        {"stable_seq": 5},
        {"replica": 2},
        {"checkpoint_proof": ()},
        {"checkpoint_proof": (dataclasses.replace(checkpoint, signature=b"x" * 64),)},
        {"prepared": ()},
        {"prepared": (swapped_prepare,)},
    ):
        assert dataclasses.replace(vc, **change).signing_bytes() != signing
    assert rebuild(vc).signing_bytes() == signing
    nv = NewView(2, (vc,), (PrePrepare(2, 5, b"d" * 32, 2, b"t" * 64, None),), 2, b"s" * 64)
    assert vc.encode() in nv.signing_bytes()
    resigned_vc = dataclasses.replace(vc, signature=b"v" * 64)
    assert dataclasses.replace(nv, view_changes=(resigned_vc,)).signing_bytes() != (
        nv.signing_bytes()
    )
    assert dataclasses.replace(nv, pre_prepares=()).signing_bytes() != nv.signing_bytes()


def test_prepare_and_commit_signatures_do_not_transfer() -> None:
    """Same fields, different tags: a signed Prepare is not a signed Commit."""
    key = KeyPair(bytes([9]) * 32)
    prepare = Prepare(1, 2, b"d" * 32, 0, b"")
    prepare = dataclasses.replace(prepare, signature=key.sign(prepare.signing_bytes()))
    commit = Commit(1, 2, b"d" * 32, 0, prepare.signature)
    assert verify(key.public_key, prepare.signing_bytes(), prepare.signature)
    assert not verify(key.public_key, commit.signing_bytes(), commit.signature)
