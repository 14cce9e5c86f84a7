"""Precision and memory format: bf16 autocast and channels-last reach training, evaluation and scoring (CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from learnloss.errors import UsageError
from learnloss.inference import stream
from learnloss.inference.precision import Precision, bf16_native
from learnloss.runs.spec import RunSpec
from learnloss.runs.builder import build_loop
from learnloss.runs.presets import resolve_spec

SETTINGS = {"initial": 60, "query": 30, "cycles": 2, "epochs": 10, "subset": 300, "device": "cpu"}


def test_bf16_and_channels_last_train_evaluate_and_score_on_cpu():
    spec = resolve_spec("quick", {**SETTINGS, "strategy": "learning-loss", "precision": "bf16", "channels_last": True})
    loop = build_loop(spec)
    seen = []
    loop.view.model.register_forward_hook(lambda module, inputs, output: seen.append((
        output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last), module.training)))
    results = loop.run()
    assert {dtype for dtype, _, _ in seen} == {torch.bfloat16}  # autocast in every pass
    assert all(channels_last for _, channels_last, _ in seen)
    assert {training for _, _, training in seen} == {True, False}  # training and evaluation/scoring passes
    assert len(results[0].selected) == 30 and math.isfinite(results[0].lpm_ranking_accuracy)
    reference = build_loop(spec.replace(precision="fp32", channels_last=False)).run()
    for low, full in zip(results, reference):  # the same training in a lower precision: close, not equal
        assert math.isfinite(low.test_accuracy) and abs(low.test_accuracy - full.test_accuracy) < 0.1


def test_the_cpu_presets_run_fp32_without_autocast():
    loop = build_loop(resolve_spec("quick", {**SETTINGS, "strategy": "entropy", "cycles": 1}))
    assert loop.view.precision == Precision("fp32")
    dtypes = []
    loop.view.model.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    stream(loop.view, loop.eval_batches(loop.dataset.x_test, None, torch.arange(10).numpy()), lambda b: {})
    assert dtypes == [torch.float32]


def test_fp16_is_refused_on_a_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        build_loop(resolve_spec("quick", {**SETTINGS, "strategy": "random", "precision": "fp16"}))
    with pytest.raises(UsageError, match="--precision"):
        resolve_spec("quick", {"precision": "fp8"})


def test_auto_is_bf16_where_the_device_computes_it_natively_and_fp32_elsewhere(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert bf16_native(cpu) and Precision("auto", True).resolve(cpu) == Precision("bf16", True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not bf16_native(cpu) and Precision("auto").resolve(cpu) == Precision("fp32")
    assert not bf16_native(torch.device("meta"))
    assert Precision("fp16").resolve(cpu) == Precision("fp16")  # only auto is resolved


def test_the_paper_recipe_asks_for_the_fast_path_and_a_run_records_what_ran():
    assert RunSpec().precision == "auto" and RunSpec().channels_last
    assert resolve_spec("paper").precision == "auto" and resolve_spec("fmnist-paper").channels_last
    for protocol in ("quick", "fmnist-cpu", "fmnist-lt-cpu", "labeling"):
        assert (resolve_spec(protocol).precision, resolve_spec(protocol).channels_last) == ("fp32", False)
    spec = resolve_spec("quick", {**SETTINGS, "strategy": "random", "cycles": 1, "precision": "auto"})
    loop = build_loop(spec)
    assert loop.view.precision.dtype == ("bf16" if bf16_native(torch.device("cpu")) else "fp32")
    assert loop.view.precision.autocast_dtype in (torch.bfloat16, None)
