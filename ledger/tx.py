"""Signed transactions.  The native kind is `transfer`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.crypto import ADDRESS_SIZE, PUBLIC_KEY_SIZE, KeyPair, address_of, verify
from ledger.encoding import MAX_INT, Struct, Tag
from ledger.errors import BadSignature, MalformedTx, WrongChain

MAX_TX_BYTES = 16 * 1024
TRANSFER = "transfer"
EVIDENCE = "evidence"
CONTRACT = "contract"
KINDS = frozenset({TRANSFER, EVIDENCE, CONTRACT})
MAX_EVIDENCE_BYTES = 4096


@dataclass(frozen=True)
class Tx(Struct):
    """A transaction: signed by `sender` (an Ed25519 public key) over every other field."""

    TAG = Tag.TX
    chain_id: str
    sender: bytes
    nonce: int
    kind: str
    payload: dict[str, Any]
    signature: bytes

    @classmethod
    def create(
        cls, key: KeyPair, chain_id: str, nonce: int, kind: str, payload: dict[str, Any]
    ) -> Tx:
        unsigned = cls(chain_id, key.public_key, nonce, kind, payload, b"")
        return cls(
            chain_id, key.public_key, nonce, kind, payload, key.sign(unsigned.signing_bytes())
        )

    @property
    def tx_id(self) -> bytes:
        """The hash of the signed encoding (Ed25519 signatures are not malleable in libsodium)."""
        return self.sha256()

    @property
    def sender_address(self) -> bytes:
        cached: bytes | None = self.__dict__.get("_addr")
        if cached is None:
            cached = address_of(self.sender)
            object.__setattr__(self, "_addr", cached)
        return cached

    @property
    def accounts(self) -> tuple[bytes, ...]:
        """The addresses whose history the tx is part of: its sender, and a transfer's
        recipient (a contract's parties are found through the contract: ledger/store.py)."""
        to = self.payload.get("to") if self.kind == TRANSFER else None
        if isinstance(to, bytes) and to != self.sender_address:
            return (self.sender_address, to)
        return (self.sender_address,)

    def check_stateless(self, chain_id: str) -> None:
        """Everything that can be checked without state: shape, chain id, payload, signature."""
        if self.chain_id != chain_id:
            raise WrongChain(f"tx is for chain {self.chain_id!r}, this is {chain_id!r}")
        if len(self.sender) != PUBLIC_KEY_SIZE:
            raise MalformedTx("sender must be a 32-byte Ed25519 public key")
        if not 0 <= self.nonce <= MAX_INT:
            raise MalformedTx("nonce must be a non-negative integer")
        if len(self.encode()) > MAX_TX_BYTES:
            raise MalformedTx(f"tx larger than {MAX_TX_BYTES} bytes")
        check_payload(self.kind, self.payload)
        if not verify(self.sender, self.signing_bytes(), self.signature):
            raise BadSignature("signature does not verify against the sender's key")


def check_payload(kind: str, payload: dict[str, Any]) -> None:
    if kind not in KINDS:
        raise MalformedTx(f"unknown tx kind {kind!r}; known: {sorted(KINDS)}")
    if kind == EVIDENCE:
        check_evidence_shape(payload)
        return
    if kind == CONTRACT:
        check_contract_shape(payload)
        return
    if set(payload) != {"to", "amount"}:
        raise MalformedTx("transfer payload must have exactly the keys 'to' and 'amount'")
    to, amount = payload["to"], payload["amount"]
    if not isinstance(to, bytes) or len(to) != ADDRESS_SIZE:
        raise MalformedTx(f"'to' must be a {ADDRESS_SIZE}-byte address")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_INT:
        raise MalformedTx("'amount' must be a positive integer")


def transfer(key: KeyPair, chain_id: str, nonce: int, to: bytes, amount: int) -> Tx:
    return Tx.create(key, chain_id, nonce, TRANSFER, {"to": to, "amount": amount})


def check_evidence_shape(payload: dict[str, Any]) -> None:
    """Evidence: two encoded messages signed by `member` that contradict each other.

    The ledger only checks the shape and records it; what counts as a contradiction is
    the consensus protocol's to say, and replicas check it before ordering the tx.
    """
    if set(payload) != {"member", "a", "b"}:
        raise MalformedTx("evidence payload must have exactly 'member', 'a' and 'b'")
    if not isinstance(payload["member"], str):
        raise MalformedTx("evidence 'member' must be a node id")
    for key in ("a", "b"):
        value = payload[key]
        if not isinstance(value, bytes) or not 0 < len(value) <= MAX_EVIDENCE_BYTES:
            raise MalformedTx(
                f"evidence {key!r} must be an encoded message of at most {MAX_EVIDENCE_BYTES} bytes"
            )


def check_contract_shape(payload: dict[str, Any]) -> None:
    """{"engine": str, "op": str, "id": bytes (empty for a new contract), "args": map}."""
    if set(payload) != {"engine", "op", "id", "args"}:
        raise MalformedTx("contract payload must have exactly 'engine', 'op', 'id', 'args'")
    if not isinstance(payload["engine"], str) or not isinstance(payload["op"], str):
        raise MalformedTx("contract 'engine' and 'op' must be strings")
    if not isinstance(payload["id"], bytes) or len(payload["id"]) not in (0, 32):
        raise MalformedTx("contract 'id' must be a 32-byte contract id (empty to create)")
    if not isinstance(payload["args"], dict):
        raise MalformedTx("contract 'args' must be a map")


def contract_call(
    key: KeyPair,
    chain_id: str,
    nonce: int,
    engine: str,
    op: str,
    contract_id: bytes,
    args: dict[str, Any],
) -> Tx:
    payload = {"engine": engine, "op": op, "id": contract_id, "args": args}
    return Tx.create(key, chain_id, nonce, CONTRACT, payload)


def evidence(key: KeyPair, chain_id: str, nonce: int, member: str, a: bytes, b: bytes) -> Tx:
    return Tx.create(key, chain_id, nonce, EVIDENCE, {"member": member, "a": a, "b": b})
