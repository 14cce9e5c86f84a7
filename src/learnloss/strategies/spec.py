"""Strategy specifications: a strategy with its parameters, and wrappers around other strategies, as one text.

Grammar: ``NAME[(INNER)][:KEY=VALUE]*``, where ``INNER`` is itself a specification, so wrappers nest::

    learning-loss
    baal-bald:iterations=10
    core-set:chunk=2048
    stochastic(margin):mode=softrank:beta=2

A strategy's parameters are the keyword arguments of its class's ``__init__``; their annotations (``int``,
``float``, ``str``, ``bool``, or a ``Literal`` of strings) convert and check the text values. A key may be
written with ``-`` or ``_`` (``mc-iterations`` = ``mc_iterations``). Everything is checked without a model, so a
bad specification fails before any training.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any, Literal

from learnloss.errors import UnknownNameError, UsageError
from learnloss.strategies.base import Strategy, WrapperStrategy
from learnloss.strategies.registry import STRATEGIES, available_strategies

#: Characters with a meaning in the grammar, so never part of a text value.
RESERVED = ":()="


@dataclass(frozen=True)
class StrategySpec:
    """A parsed strategy specification.

    ``str(spec)`` is its canonical text: ``NAME(INNER):key=value...`` with the parameters sorted by key (written
    with ``-``); a strategy with no parameters and no inner strategy prints as its bare name, so
    ``str(parse_strategy("learning-loss")) == "learning-loss"`` and ``parse_strategy(str(spec)) == spec``.

    Attributes:
        name: the registered strategy name.
        params: the parameters, keyed by ``__init__`` argument name (``_``), with converted values.
        inner: the wrapped strategy's specification, for a wrapper.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    inner: StrategySpec | None = None

    def __post_init__(self) -> None:
        params = {_key(key): value for key, value in self.params.items()}
        object.__setattr__(self, "params", MappingProxyType(dict(sorted(params.items()))))

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items()), self.inner))

    def __str__(self) -> str:
        text = self.name if self.inner is None else f"{self.name}({self.inner})"
        return text + "".join(f":{key.replace('_', '-')}={_format(value)}" for key, value in self.params.items())

    def __repr__(self) -> str:
        return f"StrategySpec(name={self.name!r}, params={dict(self.params)!r}, inner={self.inner!r})"


def parse_strategy(text: str) -> StrategySpec:
    """Parse and check a specification such as ``stochastic(margin):beta=2`` (names, keys and values).

    Raises:
        UnknownNameError: a strategy name is not registered.
        UsageError: a malformed text, an unknown key, a bad value, a wrapper without an inner strategy or an
            inner strategy given to one that wraps nothing; the one-line message names the specification.
    """
    if not isinstance(text, str):
        raise UsageError(f"a strategy specification is a text such as 'entropy', got {text!r}")
    return _parse(text, text)


def strategy_parameters(name: str) -> tuple[str, ...]:
    """The parameter keys strategy ``name`` accepts (``__init__`` argument names, with ``_``), in order."""
    return tuple(key for key, param in _parameters(_lookup(name.strip().lower())).items() if param.settable)


def split_strategy_settings(text: str) -> tuple[str, dict[str, str]]:
    """Split a benchmark arm such as ``baal-bald:iterations=5:reset=reinit`` into the strategy specification
    (``baal-bald:iterations=5``: the name, the inner specification as written and the strategy's own top-level
    parameters) and the other ``KEY=VALUE`` pairs (``{"reset": "reinit"}``: raw text, keys as written) for the
    caller to check as run settings. A key that the strategy accepts is the strategy's.

    Only the structure and the name are checked here; build the returned specification to check its values.

    Raises:
        UnknownNameError: the strategy name is not registered.
        UsageError: a malformed text or a setting given twice.
    """
    name, inner, parts = _structure(text, text)
    accepted = set(strategy_parameters(name))
    own: list[str] = []
    settings: dict[str, str] = {}
    seen: set[str] = set()
    for key, value, part in parts:
        if _key(key) in accepted:
            own.append(part.strip())
            continue
        if _key(key) in seen:
            raise UsageError(f"strategy {text!r}: setting {key!r} is given twice")
        seen.add(_key(key))
        settings[key] = value
    head = name if inner is None else f"{name}({inner})"
    return ":".join([head, *own]), settings


def build_strategy(spec: str | StrategySpec) -> Strategy:
    """Create a strategy from its specification (e.g. ``learning-loss``, ``core-set:chunk=2048``,
    ``stochastic(entropy):beta=2``), wrapped strategies first. The strategy's :attr:`~Strategy.spec` is the
    canonical specification; its :attr:`~Strategy.name` stays the registered name.

    Raises:
        UnknownNameError: a strategy name is not registered.
        UsageError: the specification or a value is invalid (see :func:`parse_strategy`), or a strategy refuses
            its parameters or inner strategy (the message names the specification).
    """
    if isinstance(spec, StrategySpec):
        root = str(spec)
        parsed = _checked(spec, root)
    else:
        root = spec
        parsed = parse_strategy(spec)
    return _build(parsed, root)


def describe(strategy: Strategy) -> StrategySpec:
    """The specification of a strategy built without one: its parameters that differ from their defaults."""
    params = {}
    for key, param in _parameters(type(strategy)).items():
        value = getattr(strategy, key, param.default)
        if param.settable and value != param.default:
            params[key] = value
    inner = strategy.inner.spec if isinstance(strategy, WrapperStrategy) else None
    return StrategySpec(strategy.name, params, inner)


# --- parameters ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    hint: Any  # int, float, str, bool, a Literal of strings, or None when the text cannot set it
    default: Any

    @property
    def settable(self) -> bool:
        return self.hint is not None

    @property
    def expected(self) -> str:
        if typing.get_origin(self.hint) is Literal:
            return "one of " + ", ".join(typing.get_args(self.hint))
        return {int: "an integer", float: "a finite number", bool: "true or false",
                str: "a non-empty text without " + ", ".join(RESERVED)}[self.hint]


@cache
def _parameters(cls: type[Strategy]) -> dict[str, _Param]:
    if cls.__init__ is object.__init__:
        return {}
    hints = typing.get_type_hints(cls.__init__)
    params = {}
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or (
            param.name == "inner" and issubclass(cls, WrapperStrategy)
        ):
            continue
        hint = hints.get(param.name)
        literal = typing.get_origin(hint) is Literal and all(isinstance(arg, str) for arg in typing.get_args(hint))
        supported = hint in (int, float, str, bool) or literal
        default = None if param.default is param.empty else param.default
        params[param.name] = _Param(param.name, hint if supported else None, default)
    return params


def _convert(param: _Param, value: Any) -> Any:
    """The value of ``param`` for a text or typed ``value``; ValueError when it is not one."""
    hint = param.hint
    if isinstance(value, str):
        text = value.strip()
        if typing.get_origin(hint) is Literal:
            if text.lower() not in typing.get_args(hint):
                raise ValueError
            return text.lower()
        if hint is str:
            if not text or any(c in text for c in RESERVED):
                raise ValueError
            return text
        if hint is bool:
            words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False,
                     "0": False}
            if text.lower() not in words:
                raise ValueError
            return words[text.lower()]
        if hint is int:
            return int(text)
        number = float(text)
        if not math.isfinite(number):
            raise ValueError
        return number
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError


def _key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# --- parsing and building --------------------------------------------------------------------------------------


def _lookup(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownNameError("strategy", name, available_strategies()) from None


def _structure(text: str, root: str) -> tuple[str, str | None, list[tuple[str, str, str]]]:
    """``NAME[(INNER)][:KEY=VALUE]*`` -> (name, inner text or None, [(key, value, part)]); names unchecked."""
    text = text.strip()
    end = next((i for i, c in enumerate(text) if c in "():"), len(text))
    name = text[:end].strip().lower()
    if not name:
        raise UsageError(f"strategy {root!r}: a strategy name is missing")
    rest = text[end:]
    inner = None
    if rest.startswith(")"):
        raise UsageError(f"strategy {root!r}: unbalanced ')' after {name!r}")
    if rest.startswith("("):
        depth = 0
        for close, c in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth == 0:
                break
        else:
            raise UsageError(f"strategy {root!r}: missing ')' after {rest!r}")
        inner, rest = rest[1:close], rest[close + 1 :].strip()
        if rest and not rest.startswith(":"):
            raise UsageError(f"strategy {root!r}: expected ':' or the end after ')', got {rest!r}")
    parts = []
    for part in rest[1:].split(":") if rest else []:
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or any(c in part for c in "()"):
            raise UsageError(f"strategy {root!r}: expected KEY=VALUE after ':', got {part!r}")
        parts.append((key.strip(), value.strip(), part))
    return name, inner, parts


def _parse(text: str, root: str) -> StrategySpec:
    """Parse ``text`` (all of ``root`` or an inner specification in it); errors name ``root``."""
    name, inner, parts = _structure(text, root)
    return _spec(name, None if inner is None else _parse(inner, root), [(key, value) for key, value, _ in parts], root)


def _spec(name: str, inner: StrategySpec | None, items: Iterable[tuple[str, Any]], root: str) -> StrategySpec:
    """Check the name, the inner strategy's presence and the parameters; convert the values."""
    cls = _lookup(name)
    if issubclass(cls, WrapperStrategy) and inner is None:
        raise UsageError(f"strategy {root!r}: {name} wraps another strategy; write {name}(INNER), e.g. {name}(entropy)")
    if not issubclass(cls, WrapperStrategy) and inner is not None:
        raise UsageError(f"strategy {root!r}: {name} wraps no other strategy; remove ({inner})")
    accepted = {key: param for key, param in _parameters(cls).items() if param.settable}
    params: dict[str, Any] = {}
    for key, value in items:
        param = accepted.get(_key(key))
        if param is None:
            keys = ", ".join(k.replace("_", "-") for k in accepted)
            listing = f"{name} accepts: {keys}" if accepted else f"{name} accepts no parameters"
            raise UsageError(f"strategy {root!r}: unknown parameter {key!r}; {listing}")
        if param.name in params:
            raise UsageError(f"strategy {root!r}: parameter {key!r} of {name} is given twice")
        try:
            params[param.name] = _convert(param, value)
        except ValueError:
            raise UsageError(
                f"strategy {root!r}: parameter {key!r} of {name} must be {param.expected}, got {value!r}"
            ) from None
    return StrategySpec(name, params, inner)


def _checked(spec: StrategySpec, root: str) -> StrategySpec:
    """A specification made in Python, checked (and its values converted) as if it had been parsed."""
    inner = None if spec.inner is None else _checked(spec.inner, root)
    return _spec(spec.name.strip().lower(), inner, spec.params.items(), root)


def _build(spec: StrategySpec, root: str) -> Strategy:
    cls = _lookup(spec.name)
    args = [] if spec.inner is None else [_build(spec.inner, root)]
    try:
        strategy = cls(*args, **spec.params)
    except UnknownNameError:
        raise
    except UsageError as error:
        raise UsageError(f"strategy {root!r}: {error}") from None
    strategy._spec = spec  # type: ignore[attr-defined]  # read by Strategy.spec
    return strategy
