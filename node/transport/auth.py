"""Peer authentication for transports: a dialer proves it holds a member's node key."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ledger.block import Member
from ledger.crypto import KeyPair, verify
from ledger.encoding import DecodeError, Struct, Tag


@dataclass(frozen=True)
class Hello(Struct):
    """The dialer's answer to a listener's challenge, signed with its node key."""

    TAG = Tag.HELLO
    chain_id: str
    node_id: str
    listener_id: str
    challenge: bytes
    signature: bytes


class KeyAuthenticator:
    def __init__(self, chain_id: str, node_id: str, key: KeyPair, members: tuple[Member, ...]):
        self.chain_id, self.node_id, self.key = chain_id, node_id, key
        self.keys = {m.node_id: m.public_key for m in members}

    def make_hello(self, challenge: bytes, listener_id: str) -> bytes:
        hello = Hello(self.chain_id, self.node_id, listener_id, challenge, b"")
        return replace(hello, signature=self.key.sign(hello.signing_bytes())).encode()

    def check_hello(self, challenge: bytes, hello: bytes) -> str | None:
        try:
            h = Hello.decode(hello)
        except DecodeError:
            return None
        key = self.keys.get(h.node_id)
        if key is None or h.node_id == self.node_id:
            return None
        if (h.chain_id, h.listener_id, h.challenge) != (self.chain_id, self.node_id, challenge):
            return None
        return h.node_id if verify(key, h.signing_bytes(), h.signature) else None
