"""Training stages: a cycle runs an ordered list of stages, each with its own optimiser, data and epochs."""

from __future__ import annotations

import torch

from learnloss.runs.builder import build_loop, train_config
from learnloss.runs.presets import resolve_spec
from learnloss.training import CycleData, EpochLog, JointTraining, Stage

SETTINGS = {"initial": 40, "query": 20, "cycles": 2, "epochs": 2, "subset": 200, "device": "cpu"}


class LPMOnly:
    """A second stage: the LPM alone, on labeled and unlabeled batches, backbone frozen and in eval mode."""

    name = "lpm-only"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def run(self, view, data: CycleData) -> list[EpochLog]:
        lpm = view.learning_loss
        optimizer = torch.optim.SGD(lpm.lpm.parameters(), lr=0.5)
        view.model.eval()
        labeled = sum(len(index) for index, _, _ in data.labeled_batches(16))
        unlabeled = 0
        for index, inputs, targets in data.unlabeled_batches(32):
            assert targets is None
            with torch.no_grad():
                view.model(inputs)
            loss = lpm.predicted_loss(detach_features=True).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            unlabeled += len(index)
        self.seen.append((labeled, unlabeled))
        return []


def test_a_second_stage_runs_after_joint_training_with_its_own_optimiser_and_data():
    spec = resolve_spec("quick", {**SETTINGS, "strategy": "learning-loss"})
    extra = LPMOnly()
    backbone_after_joint: list[list[torch.Tensor]] = []
    lpm_after_joint: list[list[torch.Tensor]] = []

    class Recording(JointTraining):
        def run(self, view, data):
            logs = super().run(view, data)
            backbone_after_joint.append([p.detach().clone() for p in view.model.parameters()])
            lpm_after_joint.append([p.detach().clone() for p in view.learning_loss.lpm.parameters()])
            return logs

    loop = build_loop(spec, stages=[Recording(train_config(spec)), extra])
    assert isinstance(extra, Stage)
    loop.run()
    pool = len(loop.pool)
    assert extra.seen == [(40, pool - 40), (60, pool - 60)]
    backbone = [p.detach() for p in loop.view.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(backbone_after_joint[-1], backbone))  # frozen in stage 2
    lpm = [p.detach() for p in loop.view.learning_loss.lpm.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(lpm_after_joint[-1], lpm))  # stage 2 trained the LPM


def test_the_default_is_the_one_joint_stage():
    loop = build_loop(resolve_spec("quick", {**SETTINGS, "strategy": "random"}))
    [stage] = loop.stages
    assert isinstance(stage, JointTraining) and stage.name == "joint" and stage.config.epochs == 2
