"""Ed25519 keys and signatures (PyNaCl), and addresses derived from public keys."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from ledger.encoding import Tag, hash_bytes

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
ADDRESS_SIZE = 20


def address_of(public_key: bytes) -> bytes:
    """An account address: the first 20 bytes of a domain-separated hash of the public key."""
    return hash_bytes(bytes([Tag.ADDRESS]) + public_key)[:ADDRESS_SIZE]


@functools.lru_cache(maxsize=1 << 15)
def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `message` by `public_key`.

    Memoized: a pure function, and the same signed message often reaches a process
    more than once (duplicates; every replica of the simulator).
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class KeyPair:
    """A signing key.  `seed` is the 32-byte secret; keep it out of logs."""

    seed: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def _signing_key(self) -> nacl.signing.SigningKey:
        key = self.__dict__.get("_sk")
        if key is None:
            key = nacl.signing.SigningKey(self.seed)
            object.__setattr__(self, "_sk", key)
        return key

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing_key.sign(message).signature)

    def __repr__(self) -> str:
        return f"KeyPair(public_key={self.public_key.hex()})"
