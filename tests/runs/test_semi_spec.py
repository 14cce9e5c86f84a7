"""Stage B's settings in the run specification: defaults, JSON form, validation, flags, and why they never make
a run that does not use them different."""

from __future__ import annotations

import pytest

from learnloss.cli.main import build_parser, parse_arm
from learnloss.errors import UsageError
from learnloss.runs.builder import build_stages, semi_config
from learnloss.runs.presets import resolve_spec
from learnloss.runs.spec import SEMI_SETTINGS, RunSpec, spec_differences
from learnloss.strategies import build_strategy


def test_the_defaults_are_the_semi_supervised_papers():
    spec = RunSpec()
    config = semi_config(spec)
    assert (config.epochs, config.lr, config.threshold, config.lpm_loss) == (30, 0.01, 0.9, "logistic")
    assert config.unlabeled is None and config.views is None
    assert (config.randaugment_n, config.randaugment_m) == (2, 10)
    assert spec.drop_easy == 0.0 and spec.lpm_loss == "ranking"  # stage A keeps the hinge of Eq. 2


def test_json_form_round_trips_all():
    spec = resolve_spec("fmnist-cpu", {"strategy": "ssl-lpm", "semi_unlabeled": "all", "semi_views": 3})
    form = spec.to_dict()
    assert form["semi_unlabeled"] == "all" and form["semi_views"] == 3
    assert RunSpec.from_dict(form) == spec


@pytest.mark.parametrize("settings, message", [
    ({"semi_epochs": 0}, "--semi-epochs"),
    ({"semi_lr": 0.0}, "--semi-lr"),
    ({"semi_threshold": 1.5}, "--semi-threshold"),
    ({"semi_lpm_loss": "hinge"}, "LPM loss"),
    ({"semi_unlabeled": 0}, "--semi-unlabeled"),
    ({"semi_views": -1}, "--semi-views"),
    ({"drop_easy": 1.0}, "--drop-easy"),
])
def test_bad_stage_b_settings_are_refused_before_any_data(settings, message):
    with pytest.raises(UsageError, match=message):
        resolve_spec("quick", settings)


def test_settings_a_run_never_reads_do_not_make_it_different():
    stored = resolve_spec("fmnist-cpu", {"strategy": "margin"}).to_dict()
    for key in SEMI_SETTINGS:
        stored.pop(key)  # a run stored before stage B existed
    stored["semi_epochs"] = 99
    assert spec_differences(stored, resolve_spec("fmnist-cpu", {"strategy": "margin"})) == []
    # ... but for a strategy that runs stage B they count
    requested = resolve_spec("fmnist-cpu", {"strategy": "ssl-lpm"})
    assert any(line.startswith("semi_epochs") for line in spec_differences(stored, requested))
    assert resolve_spec("quick", {"strategy": "ssl-lpm:semi=false"}).unused() == SEMI_SETTINGS
    assert resolve_spec("quick", {"strategy": "diverse(learning-loss)"}).unused() == SEMI_SETTINGS


def test_cpu_protocols_size_stage_b_and_the_ssl_paper_preset_is_the_papers_setting():
    for protocol in ("fmnist-cpu", "fmnist-lt-cpu"):
        spec = resolve_spec(protocol)
        assert spec.semi_unlabeled is not None and spec.semi_views is not None
        assert spec.semi_epochs == 30 and spec.semi_lr == 0.01
    assert resolve_spec("fmnist-lt-cpu").dataset == "fashion-mnist-lt"
    paper = resolve_spec("ssl-paper")
    assert (paper.dataset, paper.initial, paper.query, paper.cycles, paper.subset) == ("cifar100", 2500, 2500, 6, None)
    strategy = build_strategy(paper.strategy)
    assert strategy.training_stages == ("semi-lpm",) and strategy.memory_mb >= 4800


def test_the_strategy_decides_which_stages_run():
    spec = resolve_spec("quick")
    assert [s.name for s in build_stages(spec, build_strategy("ssl-lpm"))] == ["joint", "semi-lpm"]
    for name in ("ssl-lpm:semi=false", "learning-loss", "diverse(learning-loss)", "random"):
        assert [s.name for s in build_stages(spec, build_strategy(name))] == ["joint"]


def test_flags_and_arm_overrides():
    args = build_parser().parse_args([
        "run", "--out", "x", "--semi-epochs", "5", "--semi-lr", "0.02", "--semi-threshold", "0.8",
        "--semi-lpm-loss", "ranking", "--semi-unlabeled", "all", "--semi-views", "2", "--drop-easy", "0.01",
        "--lpm-loss", "logistic",
    ])
    assert (args.semi_epochs, args.semi_lr, args.semi_threshold, args.semi_lpm_loss) == (5, 0.02, 0.8, "ranking")
    assert (args.semi_unlabeled, args.semi_views, args.drop_easy, args.lpm_loss) == ("all", 2, 0.01, "logistic")
    arm = parse_arm("ssl-lpm:cluster=false:semi-epochs=3:lpm-loss=logistic")
    assert arm.strategy == "ssl-lpm:cluster=false"
    assert arm.overrides == {"semi_epochs": 3, "lpm_loss": "logistic"}
