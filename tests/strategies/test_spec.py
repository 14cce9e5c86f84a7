"""Strategy specifications: ``NAME[(INNER)][:KEY=VALUE]*`` parsed, checked, printed canonically and built."""

from __future__ import annotations

import inspect
import re
from typing import Literal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from learnloss.errors import UnknownNameError, UsageError
from learnloss.strategies import (
    STRATEGIES,
    BaalBALD,
    CoreSet,
    Margin,
    QueryContext,
    StochasticBatchAcquisition,
    Strategy,
    StrategySpec,
    WrapperStrategy,
    available_strategies,
    build_strategy,
    parse_strategy,
    split_strategy_settings,
    strategy_parameters,
)


class Knobs(Strategy):
    """A strategy with one parameter of each supported type, registered only for these tests."""

    name = "knobs"

    def __init__(
        self, mc_iterations: int = 3, rate: float = 0.5, use_cache: bool = False, label: str = "a",
        kind: Literal["x", "y"] = "x",
    ) -> None:
        self.mc_iterations, self.rate, self.use_cache, self.label, self.kind = mc_iterations, rate, use_cache, label, kind

    def select(self, candidates, values, k, context):  # pragma: no cover - never queried
        return candidates[:k]


@pytest.fixture
def knobs(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "knobs", Knobs)


def _error(text: str) -> str:
    with pytest.raises(UsageError) as info:
        build_strategy(text)
    assert type(info.value) is UsageError
    message = str(info.value)
    assert "\n" not in message
    return message


# --- parsing and canonical text -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n, cls in STRATEGIES.items() if not issubclass(cls, WrapperStrategy)))
def test_a_bare_name_is_its_own_canonical_text(name):
    """Existing results record e.g. ``"strategy": "learning-loss"``; that text must not change."""
    spec = parse_strategy(name)
    assert spec == StrategySpec(name) and str(spec) == name and not spec.params and spec.inner is None
    assert str(build_strategy(name).spec) == name


def test_parses_parameters_with_their_types():
    assert parse_strategy("baal-bald:iterations=10") == StrategySpec("baal-bald", {"iterations": 10})
    assert type(parse_strategy("core-set:chunk=2048").params["chunk"]) is int
    spec = parse_strategy("stochastic(margin):mode=softrank:beta=2")
    assert spec.name == "stochastic" and spec.inner == StrategySpec("margin")
    assert dict(spec.params) == {"beta": 2.0, "mode": "softrank"} and type(spec.params["beta"]) is float


def test_canonical_text_sorts_the_parameters():
    assert str(parse_strategy("stochastic(margin):mode=softrank:beta=2")) == "stochastic(margin):beta=2.0:mode=softrank"
    assert str(parse_strategy(" Stochastic( Entropy ) : BETA = 2 ")) == "stochastic(entropy):beta=2.0"


def test_wrappers_nest():
    spec = parse_strategy("stochastic(stochastic(baal-bald:iterations=5):mode=power):beta=3")
    assert spec.inner.inner == StrategySpec("baal-bald", {"iterations": 5})
    assert spec.inner.params["mode"] == "power" and spec.params["beta"] == 3.0
    assert str(spec) == "stochastic(stochastic(baal-bald:iterations=5):mode=power):beta=3.0"


@pytest.mark.parametrize("text", [
    "learning-loss", "core-set:chunk=7", "baal-entropy:iterations=3", "stochastic(entropy)",
    "stochastic(core-set:chunk=2):beta=0.25:mode=softmax", "stochastic(stochastic(margin):beta=1e-05)",
])
def test_canonical_text_round_trips(text):
    spec = parse_strategy(text)
    assert parse_strategy(str(spec)) == spec and hash(parse_strategy(str(spec))) == hash(spec)
    assert str(parse_strategy(str(spec))) == str(spec)


_VALUES = {
    int: st.integers(-10**6, 10**6),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    str: st.text("abcxyz-_.", min_size=1, max_size=6),
}


@st.composite
def _specs(draw, depth: int = 2) -> StrategySpec:
    name = draw(st.sampled_from(["knobs", "core-set", "entropy", "stochastic"] if depth else ["knobs", "entropy"]))
    if name == "stochastic":
        inner = draw(_specs(depth - 1))
        params = draw(st.fixed_dictionaries({}, optional={"mode": st.sampled_from(["softmax", "power", "softrank"]),
                                                           "beta": _VALUES[float]}))
        return StrategySpec(name, params, inner)
    types = {"knobs": {"mc_iterations": int, "rate": float, "use_cache": bool, "label": str},
             "core-set": {"chunk": int}, "entropy": {}}[name]
    optional = {key: _VALUES[t] for key, t in types.items()}
    if name == "knobs":
        optional["kind"] = st.sampled_from(["x", "y"])
    return StrategySpec(name, draw(st.fixed_dictionaries({}, optional=optional)))


@given(spec=_specs())
def test_any_specification_round_trips_through_its_text(spec):
    STRATEGIES["knobs"] = Knobs  # hypothesis runs this many times; fixtures would be shared between examples
    try:
        assert parse_strategy(str(spec)) == spec
    finally:
        del STRATEGIES["knobs"]


def test_keys_accept_dashes_or_underscores(knobs):
    assert parse_strategy("knobs:mc-iterations=5") == parse_strategy("knobs:mc_iterations=5")
    assert parse_strategy("knobs:MC-Iterations=5").params == {"mc_iterations": 5}
    assert str(parse_strategy("knobs:mc_iterations=5")) == "knobs:mc-iterations=5"
    assert strategy_parameters("knobs") == ("mc_iterations", "rate", "use_cache", "label", "kind")


@pytest.mark.parametrize(("text", "key", "value"), [
    ("knobs:mc-iterations=12", "mc_iterations", 12),
    ("knobs:mc-iterations=-3", "mc_iterations", -3),
    ("knobs:rate=1e-3", "rate", 0.001),
    ("knobs:rate=2", "rate", 2.0),
    ("knobs:use-cache=true", "use_cache", True),
    ("knobs:use-cache=Yes", "use_cache", True),
    ("knobs:use-cache=on", "use_cache", True),
    ("knobs:use-cache=1", "use_cache", True),
    ("knobs:use-cache=false", "use_cache", False),
    ("knobs:use-cache=no", "use_cache", False),
    ("knobs:use-cache=0", "use_cache", False),
    ("knobs:label=b.c", "label", "b.c"),
    ("knobs:kind=Y", "kind", "y"),
])
def test_text_values_are_converted_by_annotation(knobs, text, key, value):
    params = parse_strategy(text).params
    assert params[key] == value and type(params[key]) is type(value)
    assert getattr(build_strategy(text), key) == value


@pytest.mark.parametrize(("text", "expected"), [
    ("knobs:mc-iterations=1.5", "an integer"),
    ("knobs:mc-iterations=ten", "an integer"),
    ("knobs:mc-iterations=", "an integer"),
    ("knobs:rate=fast", "a finite number"),
    ("knobs:rate=nan", "a finite number"),
    ("knobs:rate=inf", "a finite number"),
    ("knobs:use-cache=maybe", "true or false"),
    ("knobs:label=", "a non-empty text without :, (, ), ="),
    ("knobs:label=a=b", "a non-empty text without :, (, ), ="),
    ("knobs:kind=z", "one of x, y"),
])
def test_a_bad_value_names_the_spec_the_key_and_what_it_must_be(knobs, text, expected):
    key = text.split(":")[1].partition("=")[0]
    message = _error(text)
    assert message.startswith(f"strategy {text!r}: parameter {key!r} of knobs must be {expected}, got ")


def test_an_unknown_key_lists_the_accepted_keys():
    assert _error("core-set:chnk=5") == "strategy 'core-set:chnk=5': unknown parameter 'chnk'; core-set accepts: chunk"
    assert _error("stochastic(margin):temperature=2") == (
        "strategy 'stochastic(margin):temperature=2': unknown parameter 'temperature'; stochastic accepts: mode, beta"
    )
    assert _error("random:seed=1") == "strategy 'random:seed=1': unknown parameter 'seed'; random accepts no parameters"


def test_an_error_in_an_inner_strategy_names_the_whole_spec():
    assert _error("stochastic(core-set:chnk=5)") == (
        "strategy 'stochastic(core-set:chnk=5)': unknown parameter 'chnk'; core-set accepts: chunk"
    )


def test_a_key_given_twice_is_refused():
    assert "'chunk' of core-set is given twice" in _error("core-set:chunk=5:chunk=6")


@pytest.mark.parametrize(("text", "problem"), [
    ("", "a strategy name is missing"),
    ("  ", "a strategy name is missing"),
    (":chunk=5", "a strategy name is missing"),
    ("(entropy)", "a strategy name is missing"),
    ("stochastic()", "a strategy name is missing"),
    ("core-set:", "expected KEY=VALUE after ':', got ''"),
    ("core-set:chunk", "expected KEY=VALUE after ':', got 'chunk'"),
    ("core-set:=5", "expected KEY=VALUE after ':', got '=5'"),
    ("core-set:chunk=5:(x)=1", "expected KEY=VALUE after ':'"),
    ("stochastic(entropy", "missing ')'"),
    ("stochastic(entropy))", "expected ':' or the end after ')'"),
    ("stochastic(entropy)beta=2", "expected ':' or the end after ')'"),
    ("entropy)", "unbalanced ')'"),
])
def test_a_malformed_spec_is_a_usage_error(text, problem):
    message = _error(text)
    assert message.startswith(f"strategy {text!r}: ") and problem in message


def test_a_wrapper_needs_an_inner_strategy_and_only_a_wrapper_takes_one():
    assert _error("stochastic:beta=2") == (
        "strategy 'stochastic:beta=2': stochastic wraps another strategy; write stochastic(INNER), e.g. stochastic(entropy)"
    )
    assert _error("entropy(margin)") == "strategy 'entropy(margin)': entropy wraps no other strategy; remove (margin)"


@pytest.mark.parametrize("text", ["bald", "stochastic(bald)", "stochastic(stochastic(bald):beta=2)", "BALD:x=1"])
def test_unknown_names_raise_unknown_name_error(text):
    with pytest.raises(UnknownNameError, match="unknown strategy 'bald'; choose one of: baal-bald, .*stochastic"):
        build_strategy(text)


def test_a_spec_must_be_text():
    with pytest.raises(UsageError, match="is a text"):
        parse_strategy(None)  # type: ignore[arg-type]


# --- building ---------------------------------------------------------------------------------------------------


def test_built_strategies_know_their_spec_and_keep_their_name():
    strategy = build_strategy("core-set:chunk=64")
    assert isinstance(strategy, CoreSet) and strategy.chunk == 64 and strategy.name == "core-set"
    assert str(strategy.spec) == "core-set:chunk=64" and "core-set:chunk=64" in repr(strategy)
    wrapper = build_strategy("stochastic(baal-bald:iterations=4):beta=2:mode=softmax")
    assert isinstance(wrapper, StochasticBatchAcquisition) and wrapper.name == "stochastic"
    assert isinstance(wrapper.inner, BaalBALD) and wrapper.inner.iterations == 4
    assert (wrapper.mode, wrapper.beta) == ("softmax", 2.0)
    assert str(wrapper.spec) == "stochastic(baal-bald:iterations=4):beta=2.0:mode=softmax"
    assert str(wrapper.inner.spec) == "baal-bald:iterations=4"


def test_every_strategy_builds_without_parameters_with_the_existing_defaults():
    assert build_strategy("baal-bald").iterations == 20 and BaalBALD().iterations == 20
    assert build_strategy("core-set").chunk == 4096 and CoreSet().chunk == 4096
    for name, cls in STRATEGIES.items():
        if not issubclass(cls, WrapperStrategy):
            assert type(build_strategy(name)) is cls


def test_every_registered_parameter_can_be_set_from_text():
    for name, cls in STRATEGIES.items():
        expected = [p for p in list(inspect.signature(cls.__init__).parameters)[1:] if p not in ("inner", "args", "kwargs")]
        assert list(strategy_parameters(name)) == expected, name
    assert strategy_parameters("core-set") == ("chunk",)
    assert strategy_parameters("baal-bald") == strategy_parameters("baal-entropy") == ("iterations",)
    assert strategy_parameters("stochastic") == ("mode", "beta")
    assert strategy_parameters("random") == ()
    with pytest.raises(UnknownNameError):
        strategy_parameters("bald")


def test_a_strategy_made_in_python_describes_itself_by_its_non_default_parameters():
    assert str(CoreSet().spec) == "core-set" and str(CoreSet(chunk=5).spec) == "core-set:chunk=5"
    assert str(StochasticBatchAcquisition(Margin(), mode="power").spec) == "stochastic(margin):mode=power"
    assert str(StochasticBatchAcquisition(Margin(), beta=3).spec) == "stochastic(margin):beta=3.0"


def test_a_strategy_refusing_its_parameters_is_a_usage_error_naming_the_spec():
    assert _error("baal-bald:iterations=1") == "strategy 'baal-bald:iterations=1': MC dropout needs at least 2 iterations, got 1"
    assert _error("stochastic(baal-bald:iterations=1)").startswith(
        "strategy 'stochastic(baal-bald:iterations=1)': MC dropout needs at least 2"
    )
    assert _error("stochastic(entropy):beta=0") == (
        "strategy 'stochastic(entropy):beta=0': parameter 'beta' of stochastic must be a positive number, got 0.0"
    )


def test_builds_from_a_spec_object_checking_it_like_a_text():
    built = build_strategy(StrategySpec("stochastic", {"beta": 2, "mode": "power"}, StrategySpec("entropy")))
    assert str(built.spec) == "stochastic(entropy):beta=2.0:mode=power" and type(built.beta) is float
    assert build_strategy(StrategySpec("core-set", {"chunk": "64"})).chunk == 64
    with pytest.raises(UsageError, match="unknown parameter 'chnk'"):
        build_strategy(StrategySpec("core-set", {"chnk": 64}))
    with pytest.raises(UsageError, match="'chunk' of core-set must be an integer, got 1.5"):
        build_strategy(StrategySpec("core-set", {"chunk": 1.5}))
    with pytest.raises(UsageError, match="must be an integer, got True"):
        build_strategy(StrategySpec("core-set", {"chunk": True}))
    with pytest.raises(UsageError, match="wraps another strategy"):
        build_strategy(StrategySpec("stochastic"))


def test_a_spec_is_checked_without_a_model():
    """Everything above runs before any model exists; the built strategy also selects without one."""
    strategy = build_strategy("stochastic(entropy):mode=softmax:beta=4")
    picks = strategy.query(np.arange(5), {"score": np.arange(5.0)}, 2, QueryContext(rng=np.random.default_rng(0)))
    assert len(set(picks.tolist())) == 2


def test_available_strategies_lists_the_wrapper():
    assert available_strategies() == sorted(STRATEGIES) and "stochastic" in available_strategies()


# --- benchmark arms ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arm", "strategy", "settings"), [
    ("entropy", "entropy", {}),
    ("learning-loss:lpm-loss=mse:reset=reinit", "learning-loss", {"lpm-loss": "mse", "reset": "reinit"}),
    ("baal-bald:iterations=5:reset=reinit", "baal-bald:iterations=5", {"reset": "reinit"}),
    ("learning-loss:lpm_loss=mse", "learning-loss", {"lpm_loss": "mse"}),
    ("stochastic(baal-bald:iterations=3:epochs=2):epochs=4:beta=2:mode=power",
     "stochastic(baal-bald:iterations=3:epochs=2):beta=2:mode=power", {"epochs": "4"}),
    ("core-set:Chunk=5:epochs=3", "core-set:Chunk=5", {"epochs": "3"}),
])
def test_split_strategy_settings(arm, strategy, settings):
    assert split_strategy_settings(arm) == (strategy, settings)


def test_split_keeps_dashed_and_underscored_strategy_keys(knobs):
    assert split_strategy_settings("knobs:mc_iterations=2:use-cache=yes:epochs=1") == (
        "knobs:mc_iterations=2:use-cache=yes", {"epochs": "1"}
    )


def test_split_leaves_values_to_the_caller_and_to_build():
    strategy, settings = split_strategy_settings("core-set:chunk=many:epochs=lots")
    assert settings == {"epochs": "lots"}
    with pytest.raises(UsageError, match="must be an integer"):
        build_strategy(strategy)


@pytest.mark.parametrize(("arm", "problem"), [
    ("learning-loss:reset", "expected KEY=VALUE"),
    (":reset=reinit", "a strategy name is missing"),
    ("learning-loss:reset=reinit:reset=keep", "setting 'reset' is given twice"),
    ("learning-loss:lpm-loss=mse:lpm_loss=l1", "setting 'lpm_loss' is given twice"),
])
def test_split_refuses_malformed_arms(arm, problem):
    with pytest.raises(UsageError, match=re.escape(problem)):
        split_strategy_settings(arm)
    with pytest.raises(UnknownNameError):
        split_strategy_settings("bald:reset=reinit")
