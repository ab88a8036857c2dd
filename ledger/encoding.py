"""The one canonical encoding for everything that is hashed, signed or sent.

A message is one domain-tag byte followed by msgpack of a list of its fields.
Canonical means: maps have str keys in sorted order, integers use msgpack's
shortest form, only int/bytes/str/bool/None/list/map occur (no floats, no
extension types), and there are no trailing bytes.  Decoding re-encodes and
compares, so any other byte string for the same value is rejected.

A nested struct is embedded as the bytes of its own encoding, so every
sub-message keeps its domain tag and can be hashed without re-encoding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, ClassVar, Self, TypeVar

import msgpack

MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
MAX_DEPTH = 32  # structs embed sub-structs as bytes, so real messages nest only a few levels


class Tag(IntEnum):
    """Domain tags: one byte per message kind, so no two kinds share a hash or signature."""

    TX = 0x01
    BLOCK_HEADER = 0x02
    BLOCK = 0x03
    RECEIPT = 0x04
    ACCOUNT = 0x05
    GENESIS = 0x06
    MERKLE_LEAF = 0x07
    MERKLE_NODE = 0x08
    ADDRESS = 0x09
    PRE_PREPARE = 0x10
    PREPARE = 0x11
    COMMIT = 0x12
    FORWARD_TXS = 0x13
    COMMIT_CERTIFICATE = 0x14
    CHECKPOINT = 0x15
    PREPARED_CERT = 0x16
    VIEW_CHANGE = 0x17
    NEW_VIEW = 0x18
    STATUS = 0x19
    FETCH_BLOCKS = 0x1A
    BLOCKS = 0x1B
    MEMBER = 0x0A
    BATCH = 0x0B
    BATCH_HEADER = 0x0C
    CONTRACT = 0x0D
    EXCHANGE = 0x0E
    CONTRACT_MOVE = 0x0F
    HELLO = 0x20
    RISK_SHARING = 0x21
    RISK_SCHEDULE = 0x22
    RISK_LOTTERY = 0x23
    RISK_EVENT = 0x24
    POW_WORK = 0x25
    POW_SEAL = 0x26
    POW_TIP = 0x27
    ENVELOPE = 0x28
    SEALED = 0x29
    SEALED_EVENT = 0x2A
    SMT_LEAF = 0x2B  # ledger.smt node hash prefixes, not structs
    SMT_NODE = 0x2C
    SMT_PROOF = 0x2D
    STATE_ROOT = 0x2E  # ledger.state: the root over the accounts and contracts trees
    STATE_PROOF = 0x2F


SIGNING_BIT = 0x80  # a struct's signing bytes use its tag | 0x80, so they never equal an encoding


class DecodeError(ValueError):
    """Bytes that are not the canonical encoding of the expected message."""


def hash_bytes(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


_SCALARS = frozenset({bytes, str, bool, type(None)})


def _canonical(value: Any, depth: int = 0) -> Any:
    """Check a plain value is encodable and return it with maps key-sorted."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is int:
        if not MIN_INT <= value <= MAX_INT:
            raise ValueError(f"integer out of range: {value}")
        return value
    if depth >= MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if kind is list or kind is tuple:
        # Scalars inline: this runs on every message encoded or decoded, mostly on flat lists.
        return [
            v
            if type(v) in _SCALARS or (type(v) is int and MIN_INT <= v <= MAX_INT)
            else _canonical(v, depth + 1)
            for v in value
        ]
    if isinstance(value, Mapping):
        if not all(type(k) is str for k in value):
            raise ValueError("map keys must be str")
        return {k: _canonical(value[k], depth + 1) for k in sorted(value)}
    raise ValueError(f"type {kind.__name__} cannot be encoded canonically")


def pack(value: Any) -> bytes:
    """msgpack of a plain value in canonical form."""
    return msgpack.packb(_canonical(value), use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    """Inverse of pack; rejects trailing bytes and any non-canonical form."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise DecodeError(f"malformed msgpack: {type(e).__name__}") from e
    except (ValueError, UnicodeDecodeError, TypeError) as e:
        raise DecodeError(f"malformed msgpack: {e}") from e
    try:
        again = pack(value)
    except ValueError as e:
        raise DecodeError(f"non-canonical value: {e}") from e
    if again != data:
        raise DecodeError("non-canonical encoding")
    return value


# ---------------------------------------------------------------------------
# Structs: frozen dataclasses with a tag, encoded as a list of their fields.

_REGISTRY: dict[int, type[Struct]] = {}
S = TypeVar("S", bound="Struct")


class Struct:
    """Base of every tagged message.  Subclasses are frozen dataclasses.

    Field types allowed: int, bool, str, bytes, None-able variants, tuple[T, ...],
    dict[str, Any] (plain canonical values) and other Structs.
    """

    TAG: ClassVar[Tag]
    UNSIGNED: ClassVar[tuple[str, ...]] = ("signature",)  # fields left out of signing bytes

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("TAG")
        if tag is not None:
            if tag in _REGISTRY:
                raise TypeError(f"duplicate tag {tag!r} for {cls.__name__}")
            _REGISTRY[tag] = cls

    def to_list(self, exclude: tuple[str, ...] = ()) -> list[Any]:
        return [f.enc(getattr(self, f.name)) for f in _codec(type(self)) if f.name not in exclude]

    def encode(self) -> bytes:
        # Cached on the instance: frozen dataclasses are immutable, so the bytes never change.
        cached: bytes | None = self.__dict__.get("_encoded")
        if cached is None:
            cached = bytes([self.TAG]) + pack(self.to_list())
            object.__setattr__(self, "_encoded", cached)
        return cached

    def signing_bytes(self) -> bytes:
        # Cached like encode(): a message is verified where it arrives and again in proofs.
        cached: bytes | None = self.__dict__.get("_signing")
        if cached is None:
            cached = bytes([self.TAG | SIGNING_BIT]) + pack(self.to_list(self.UNSIGNED))
            object.__setattr__(self, "_signing", cached)
        return cached

    def sha256(self) -> bytes:
        cached: bytes | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash_bytes(self.encode())
            object.__setattr__(self, "_hash", cached)
        return cached

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if not data or data[0] != cls.TAG:
            raise DecodeError(f"expected {cls.__name__} (tag {cls.TAG:#04x})")
        obj = cls.from_list(unpack(data[1:]))
        object.__setattr__(obj, "_encoded", bytes(data))
        return obj

    @classmethod
    def from_list(cls, items: Any) -> Self:
        codec = _codec(cls)
        if type(items) is not list or len(items) != len(codec):
            raise DecodeError(f"{cls.__name__}: expected a list of {len(codec)} fields")
        values = {f.name: f.dec(v, f.name) for f, v in zip(codec, items, strict=True)}
        try:
            return cls(**values)
        except (ValueError, TypeError) as e:
            raise DecodeError(f"{cls.__name__}: {e}") from e


def decode_any(data: bytes) -> Struct:
    """Decode a message of any registered kind, dispatching on its tag byte."""
    if not data:
        raise DecodeError("empty message")
    cls = _REGISTRY.get(data[0])
    if cls is None:
        raise DecodeError(f"unknown message tag {data[0]:#04x}")
    return cls.decode(data)


# ---------------------------------------------------------------------------
# Per-class field codecs, built once from the type hints (the hot path of every message).

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, str], Any]


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    enc: Encoder
    dec: Decoder


_CODECS: dict[type, tuple[_Field, ...]] = {}


def _codec(cls: type) -> tuple[_Field, ...]:
    codec = _CODECS.get(cls)
    if codec is None:
        hints = typing.get_type_hints(cls)
        codec = tuple(_Field(f.name, *_converters(hints[f.name])) for f in dataclasses.fields(cls))
        _CODECS[cls] = codec
    return codec


def _identity(value: Any) -> Any:
    return value


def _converters(tp: Any) -> tuple[Encoder, Decoder]:
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        (inner,) = [t for t in typing.get_args(tp) if t is not type(None)]
        enc, dec = _converters(inner)
        return (
            lambda v: None if v is None else enc(v),
            lambda v, name: None if v is None else dec(v, name),
        )
    if origin is tuple:
        item_enc, item_dec = _converters(typing.get_args(tp)[0])

        def dec_tuple(v: Any, name: str) -> Any:
            if type(v) is not list:
                raise DecodeError(f"field {name!r}: expected a list")
            return tuple(item_dec(x, name) for x in v)

        return (lambda v: [item_enc(x) for x in v]), dec_tuple
    if origin is dict:
        return _identity, _expect(dict, "a map")
    if isinstance(tp, type) and issubclass(tp, Struct):
        struct = tp

        def dec_struct(v: Any, name: str) -> Any:
            if type(v) is not bytes:
                raise DecodeError(f"field {name!r}: expected embedded {struct.__name__} bytes")
            return struct.decode(v)

        return (lambda v: v.encode()), dec_struct
    if tp in (int, str, bytes, bool):
        return _identity, _expect(tp, tp.__name__)
    raise TypeError(f"unsupported field type {tp!r}")


def _expect(kind: type, what: str) -> Decoder:
    def dec(v: Any, name: str) -> Any:
        if type(v) is not kind:  # exact: a bool is not an int here
            raise DecodeError(f"field {name!r}: expected {what}")
        return v

    return dec
