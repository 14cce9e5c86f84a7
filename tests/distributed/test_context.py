"""The distributed context without a process group: one process changes nothing; errors are one line."""

from __future__ import annotations

import pytest

from learnloss.cli.main import main
from learnloss.distributed import SINGLE, Distributed, DistributedError, current, initialise, launched
from learnloss.errors import UsageError


def test_one_process_is_rank_zero_of_one_and_every_collective_is_a_no_op():
    assert current() is SINGLE and initialise() is SINGLE
    assert SINGLE.is_main and not SINGLE.active
    assert SINGLE.all_gather({"a": 1}, "x") == [{"a": 1}]
    assert SINGLE.broadcast(3, "x") == 3
    assert SINGLE.on_main(lambda: 5, "x") == 5 and SINGLE.from_main(lambda: 6, "x") == 6
    assert SINGLE.owned(3) == [0, 1, 2]
    with SINGLE.guard("x", always=True), pytest.raises(RuntimeError):  # nothing is translated in one process
        raise RuntimeError("Connection closed by peer")


def test_a_failed_collective_becomes_one_line_naming_the_rank_and_the_timeout():
    dist = Distributed(rank=1, world_size=2, timeout=30)
    with pytest.raises(DistributedError) as caught, dist.guard("training"):
        raise RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                           "[127.0.0.1]:1414. This is typically caused by a remote worker crashing. GLHF!")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("rank 1 of 2: training failed: Connection closed by peer")
    assert "30 s" in message and "LEARNLOSS_DIST_TIMEOUT" in message
    with pytest.raises(RuntimeError, match="shape mismatch"), dist.guard("training"):  # not a collective's error
        raise RuntimeError("shape mismatch")


def test_the_world_size_and_timeout_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched() and initialise() is SINGLE
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    assert launched()
    with pytest.raises(UsageError, match="RANK or LOCAL_RANK is missing"):
        initialise()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LEARNLOSS_DIST_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="LEARNLOSS_DIST_TIMEOUT must be a positive number"):
        initialise()


def test_commands_that_cannot_run_distributed_are_refused_under_torchrun(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["status", str(tmp_path)]) == 2
    assert "learnloss status runs in one process; start it without torchrun" in capsys.readouterr().err


def test_a_wrapped_model_and_module_prefixed_layers_are_read_as_the_inner_model(tiny_dataset, tiny_net):
    """Taps named as under the wrapper (``module.conv``) tap the inner model; checkpoints hold its own names."""
    from torch import nn

    from learnloss.active.loop import ActiveLearningLoop, LoopConfig
    from learnloss.strategies import build_strategy
    from learnloss.training.trainer import TrainConfig

    config = LoopConfig(initial=20, query=10, cycles=2, layers=["module.conv", "module.hidden"],
                        embedding_layer="module.hidden")
    loop = ActiveLearningLoop(nn.DataParallel(tiny_net), tiny_dataset, build_strategy("learning-loss"), config,
                              TrainConfig(epochs=1, batch_size=16))
    assert loop.view.model is tiny_net
    assert list(loop.loop.layers) == ["conv", "hidden"] and loop.loop.embedding_layer == "hidden"
    assert not any(name.startswith("module.") for name in loop.snapshot()["modules"][0])
    loop.run()
