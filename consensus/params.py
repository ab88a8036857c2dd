"""Typed parameters and their rules: a value that breaks one is a ParamError naming its key.

A parameter set is a frozen dataclass whose fields carry their rules as metadata
(`field(default=8, metadata=rule(min=1))`) and whose `__post_init__` calls `check`.  The
type comes from the annotation: int (not bool), float (an int is fine), str, bool, or
`X | None`.  node/ reads cluster.toml sections into such dataclasses, so a rule is written
once, next to its default, and checked wherever the parameters are made.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import Field, fields
from functools import cache
from typing import Any

TYPE_RULES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class ParamError(ValueError):
    """`key = value` breaks `rule` ("must be >= 1")."""

    def __init__(self, key: str, value: object, rule: str) -> None:
        super().__init__(f"{key} = {show(value)}: {rule}")
        self.key, self.value, self.rule = key, value, rule


def show(value: object) -> str:
    """A value as TOML would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{...}"
    return repr(value)


def rule(
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
    pattern: str | None = None,
    pattern_doc: str = "",
) -> dict[str, Any]:
    """Field metadata: the bounds, the allowed values or the regular expression (with the
    words that describe it) that a value must keep."""
    rules: dict[str, Any] = {"min": min, "max": max, "choices": choices, "pattern": pattern}
    return {k: v for k, v in rules.items() if v is not None} | (
        {"pattern_doc": pattern_doc} if pattern else {}
    )


def describe(cls: type, name: str) -> str:
    """The rules of one field in words: "an integer >= 1"."""
    f = next(f for f in fields(cls) if f.name == name)
    kind, optional = _kind(cls, name)
    words = [TYPE_RULES[kind]]
    m = f.metadata
    if "min" in m:
        words.append(f">= {m['min']}")
    if "max" in m:
        words.append(f"<= {m['max']}")
    if "choices" in m:
        words = [f"one of {', '.join(show(c) for c in m['choices'])}"]
    if "pattern" in m:
        words.append(m["pattern_doc"])
    return " ".join(words) + (" (optional)" if optional else "")


def check(params: object, cls: type) -> None:
    """Raise ParamError for the first field of `cls` whose value in `params` breaks a rule."""
    for f in fields(cls):
        _check_field(cls, f, getattr(params, f.name))


def _check_field(cls: type, f: Field[Any], value: Any) -> None:
    kind, optional = _kind(cls, f.name)
    if value is None and optional:
        return
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ParamError(f.name, value, f"must be {TYPE_RULES[kind]}")
    m = f.metadata
    if "choices" in m and value not in m["choices"]:
        allowed = ", ".join(show(c) for c in m["choices"])
        raise ParamError(f.name, value, f"must be one of {allowed}")
    if "min" in m and value < m["min"]:
        raise ParamError(f.name, value, f"must be >= {m['min']}")
    if "max" in m and value > m["max"]:
        raise ParamError(f.name, value, f"must be <= {m['max']}")
    if "pattern" in m and not re.fullmatch(m["pattern"], value):
        raise ParamError(f.name, value, f"must be {m['pattern_doc']}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(cls: type, name: str) -> tuple[type, bool]:
    """(the value type, whether None is allowed) from the field's annotation."""
    hint = _hints(cls)[name]
    if isinstance(hint, types.UnionType):
        args = [a for a in hint.__args__ if a is not type(None)]
        return args[0], len(args) < len(hint.__args__)
    return hint, False
