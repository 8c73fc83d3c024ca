"""Checking an object against a :mod:`paddlellm.interfaces` Protocol, member by member.

``isinstance(obj, Protocol)`` only says yes or no; :func:`protocol_problems` says what is
wrong: each missing member by name, a method that is not callable, and a method whose
signature cannot take the calls the Protocol promises (a parameter missing or renamed, a
default the Protocol has and the implementation lacks, an extra parameter without a
default). Required positional parameters are compared by position, the others by name.
Used by ``tests/test_model_contract.py``; plugin authors can call it on their own
objects.
"""
from __future__ import annotations

import inspect
from typing import Any

_SKIP = {"__init__", "__subclasshook__", "__class_getitem__", "__init_subclass__"}


def protocol_members(protocol: type) -> dict[str, str]:
    """Public members of ``protocol`` (its bases included): name -> ``"method"``,
    ``"property"`` or ``"attribute"``."""
    out: dict[str, str] = {}
    for base in reversed(protocol.__mro__):
        if base is object or base.__module__ == "typing":
            continue
        for name in getattr(base, "__annotations__", {}):
            if not name.startswith("_"):
                out[name] = "attribute"
        for name, value in vars(base).items():
            if name.startswith("_") or name in _SKIP:
                continue
            if isinstance(value, property):
                out[name] = "property"
            elif inspect.isfunction(value):
                out[name] = "method"
    return out


def _signature_problems(name: str, expected: inspect.Signature, actual: inspect.Signature) -> list[str]:
    """Required positional parameters are matched by position (callers pass them that way);
    parameters with a default and keyword-only ones by name (callers pass them by keyword)."""
    P = inspect.Parameter
    problems = []
    got = actual.parameters
    var_pos = any(p.kind is P.VAR_POSITIONAL for p in got.values())
    var_kw = any(p.kind is P.VAR_KEYWORD for p in got.values())
    positional = [p for p in got.values() if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    matched: set[str] = set()
    index = 0
    for param in expected.parameters.values():
        if param.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            if not (var_pos if param.kind is P.VAR_POSITIONAL else var_kw):
                problems.append(f"{name}() does not accept "
                                f"{'*args' if param.kind is P.VAR_POSITIONAL else '**kwargs'}")
            continue
        if param.default is P.empty and param.kind is not P.KEYWORD_ONLY:
            if index < len(positional):
                matched.add(positional[index].name)
            elif not var_pos:
                problems.append(f"{name}() lacks positional parameter '{param.name}'")
            index += 1
            continue
        mine = got.get(param.name)
        if mine is None or mine.kind is P.POSITIONAL_ONLY:
            if not var_kw:
                problems.append(f"{name}() lacks parameter '{param.name}'")
            continue
        matched.add(mine.name)
        if mine.default is P.empty:
            problems.append(f"{name}() parameter '{param.name}' needs a default")
    for extra in got.values():
        if (extra.name not in matched and extra.default is P.empty
                and extra.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)):
            problems.append(f"{name}() has extra parameter '{extra.name}' without a default")
    return problems


def protocol_problems(obj: Any, protocol: type) -> list[str]:
    """What keeps ``obj`` from following ``protocol`` (``[]`` when it does), one line each,
    naming the member: ``"lacks 'new_paged_cache'"``, ``"new_cache() lacks parameter 'dtype'"``."""
    problems = []
    for name, kind in protocol_members(protocol).items():
        try:
            value = getattr(obj, name)
        except AttributeError:
            problems.append(f"lacks '{name}'")
            continue
        except Exception as exc:  # a property that fails is a broken member, not a missing one
            problems.append(f"'{name}' raised {exc!r}")
            continue
        if kind != "method":
            continue
        if not callable(value):
            problems.append(f"'{name}' is not callable")
            continue
        expected = inspect.signature(_defined(protocol, name))
        expected = expected.replace(parameters=list(expected.parameters.values())[1:])  # self
        try:
            actual = inspect.signature(value)
        except (TypeError, ValueError):  # builtins without a signature: trust them
            continue
        problems.extend(_signature_problems(name, expected, actual))
    return problems


def _defined(protocol: type, name: str) -> Any:
    """The function ``name`` as defined on ``protocol`` or the nearest base declaring it."""
    for base in protocol.__mro__:
        if name in vars(base):
            return vars(base)[name]
    raise AttributeError(name)
