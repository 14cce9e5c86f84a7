"""The loop's CUDA paths on real hardware: training, evaluation and scoring in every precision, memory format,
input placement and compilation; fp16's loss scaling; a checkpoint written on the GPU resumed on the CPU and back;
the same selection on the GPU as on the CPU from the same scores.

Each test runs on ``$LEARNLOSS_TEST_DEVICE`` (``cuda`` by default, skipped without CUDA; ``benchmarks/gpu/run.sh``'s
dry run sets ``cpu``). Sizes are small: these tests prove that the paths run and compute what they should, the
benchmarks measure how fast.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_support import colour_dataset, loop_settings, write_npy  # noqa: E402

from learnloss.active.loop import ActiveLearningLoop  # noqa: E402
from learnloss.data import load_dataset  # noqa: E402
from learnloss.data.source import ArraySource  # noqa: E402
from learnloss.inference import ModelView  # noqa: E402
from learnloss.inference.precision import Precision  # noqa: E402
from learnloss.lpm import attach  # noqa: E402
from learnloss.models import build_model, default_taps  # noqa: E402
from learnloss.runs.builder import build_loop  # noqa: E402
from learnloss.runs.experiment import run_experiment  # noqa: E402
from learnloss.runs.journal import SimulationJournal  # noqa: E402
from learnloss.runs.presets import resolve_spec  # noqa: E402
from learnloss.strategies.base import QueryContext  # noqa: E402
from learnloss.strategies.spec import build_strategy  # noqa: E402
from learnloss.tasks import ClassificationTask  # noqa: E402
from learnloss.training import TrainConfig, Trainer  # noqa: E402

pytestmark = pytest.mark.cuda

PRECISIONS = ("fp32", "bf16", "fp16")


@pytest.fixture(scope="module")
def npy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour dataset as memory-mapped ``.npy`` files: a pool the loop reads per batch from the host."""
    return write_npy(colour_dataset(), tmp_path_factory.mktemp("npy"))


def _needs_accelerator(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type == "cpu":
        pytest.skip("fp16 autocast needs an accelerator (learnloss refuses it on a CPU)")


def _one_cycle(device: torch.device, npy_folder: Path, precision: str, channels_last: bool, resident: bool,
               compiled: bool) -> None:
    """Train a cycle, evaluate it, score the candidates and select, with these settings, and check each part."""
    _needs_accelerator(precision, device)
    dataset = colour_dataset() if resident else load_dataset("npy", npy_folder)
    spec = resolve_spec("quick", loop_settings(device, precision=precision, channels_last=channels_last,
                                               compile=compiled))
    loop = build_loop(spec, dataset)
    assert loop.device.type == device.type and loop.view.precision.dtype == precision
    assert loop.view.precision.compile is compiled
    stored = loop.dataset.x_train
    if resident and device.type == "cuda":  # the pool sits on the GPU: batches never cross the bus
        assert isinstance(stored, torch.Tensor) and stored.device.type == "cuda" and stored.dtype == torch.uint8
    if not resident:  # a memory-mapped pool stays on the host and is read batch by batch
        assert isinstance(stored, ArraySource)
    convs = [m for m in loop.view.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
                         or m.weight.shape[-2:] == (1, 1) for m in convs)
    before = [p.detach().clone() for p in loop.view.model.parameters()]
    loop.begin()
    labeled = set(loop.pool.labeled_indices.tolist())
    result = loop.step(0, query=True)
    # training moved every trainable tensor of the model, kept it float32 (autocast never casts the weights) and
    # finite, on the device
    after = list(loop.view.model.parameters())
    assert all(p.device.type == device.type and p.dtype == torch.float32 for p in after)
    assert all(bool(torch.isfinite(p).all()) for p in after)
    assert sum(not torch.equal(b, a.detach()) for b, a in zip(before, after)) >= len(after) // 2
    # evaluation: a test accuracy and the LPM's ranking of the test losses
    assert 0.0 <= result.test_accuracy <= 1.0
    assert result.lpm_ranking_accuracy is not None and math.isfinite(result.lpm_ranking_accuracy)
    # scoring and selection: K new, distinct, unlabeled samples, each with a finite LPM score
    assert len(result.selected) == spec.query and len(set(result.selected)) == spec.query
    assert not labeled & set(result.selected)
    assert loop.pool.n_labeled == spec.initial + spec.query
    assert result.candidate_ranking_accuracy is not None and math.isfinite(result.candidate_ranking_accuracy)


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "host"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_cycle_trains_evaluates_and_scores(device: torch.device, npy_folder: Path, precision: str,
                                             channels_last: bool, resident: bool) -> None:
    _one_cycle(device, npy_folder, precision, channels_last, resident, compiled=False)


def test_fp16_loss_scaling_skips_an_overflowing_step_and_keeps_training(device: torch.device) -> None:
    """The scaler learnloss makes for fp16 skips a step whose gradients overflowed (and lowers its scale), takes the
    next one, and the trainer's fp16 steps bring a batch's loss down."""
    _needs_accelerator("fp16", device)
    scaler = Precision("fp16").grad_scaler(device)
    assert scaler is not None and Precision("bf16").grad_scaler(device) is None
    weight = torch.nn.Parameter(torch.ones(4, device=device))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scale = scaler.get_scale()
    (weight * torch.tensor(float("inf"), device=device)).sum().backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(weight.detach(), torch.ones(4, device=device)) and scaler.get_scale() < scale
    optimizer.zero_grad()
    scaler.scale((weight * 2).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.allclose(weight.detach(), torch.full((4,), 0.8, device=device))

    torch.manual_seed(0)
    data = colour_dataset(n_train=64, n_test=8)
    model = build_model("small-cnn", 3, 3).to(device)
    assert isinstance(data.x_train, torch.Tensor)
    x = data.to_float(data.x_train).to(device)
    ll = attach(model, default_taps(model), x[:2])
    view = ModelView(model, ClassificationTask(), ll, precision=Precision("fp16"))
    batches = [(torch.arange(32) + 32 * i, x[32 * i:32 * (i + 1)], data.y_train[32 * i:32 * (i + 1)].to(device))
               for i in range(2)]
    logs = Trainer(TrainConfig(epochs=12, batch_size=32, lr=0.05, milestones=(), stop_grad_epoch=None,
                               augment=False)).fit(view, batches)
    assert all(math.isfinite(log.task_loss) and log.lpm_loss is not None and math.isfinite(log.lpm_loss)
               for log in logs)
    assert logs[-1].task_loss < 0.5 * logs[0].task_loss


class _Stop(Exception):
    pass


def _stop_after_training(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """Make the run stop (as a crash would) right after its journal recorded ``times`` more trained cycles."""
    original = SimulationJournal.trained
    calls: list[int] = []

    def trained(self: SimulationJournal, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == times:
            monkeypatch.setattr(SimulationJournal, "trained", original)
            raise _Stop

    monkeypatch.setattr(SimulationJournal, "trained", trained)


def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu_and_back(device: torch.device, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A run interrupted after its first cycle on the GPU continues on the CPU from the GPU's checkpoint, is
    interrupted again, and finishes on the GPU from the CPU's: every cycle is there once, each query's labels kept."""
    settings = {"epochs": 1, "initial": 30, "query": 20, "cycles": 4, "subset": 120, "seed": 3,
                "strategy": "learning-loss"}
    out = tmp_path / "run"
    _stop_after_training(monkeypatch, 1)
    with pytest.raises(_Stop):
        run_experiment(resolve_spec("quick", {**settings, "device": str(device)}), out=out, log=lambda line: None)
    checkpoint = sorted((out / "checkpoints").glob("*.pt"))
    assert checkpoint, "the interrupted run kept no checkpoint"
    stored = torch.load(checkpoint[-1], map_location="cpu", weights_only=True)
    assert stored["modules"], "the checkpoint holds no module state"
    _stop_after_training(monkeypatch, 1)
    with pytest.raises(_Stop):
        run_experiment(resolve_spec("quick", {**settings, "device": "cpu"}), out=out, resume=True,
                       log=lambda line: None)
    results = run_experiment(resolve_spec("quick", {**settings, "device": str(device)}), out=out, resume=True,
                             log=lambda line: None)
    cycles = results["cycles"]
    assert [c["cycle"] for c in cycles] == [0, 1, 2, 3] and [c["n_labeled"] for c in cycles] == [30, 50, 70, 90]
    assert results["config"]["device"].startswith(device.type)
    picked = [i for c in cycles[:-1] for i in c["selected"]]
    assert len(picked) == 60 and len(set(picked)) == 60 and not set(picked) & set(results["initial_labeled"])
    assert all(math.isfinite(c["test_accuracy"]) for c in cycles)


#: Strategies whose selection runs arithmetic on the query's device (core-set's distances, BADGE's seeding) or on
#: the host from the kept scores; Baal's need its package, MC dropout draws its own passes.
SELECTING = ("learning-loss", "entropy", "margin", "least-confidence", "core-set", "badge", "random",
             "diverse(learning-loss)")


@pytest.mark.parametrize("strategy", SELECTING)
def test_the_same_scores_give_the_same_selection_on_the_gpu(device: torch.device, strategy: str) -> None:
    """The values a query kept (scores, probabilities, embeddings), selected on the GPU and on the CPU with the
    same seeded generator, give the same picks in the same order."""
    spec = resolve_spec("quick", loop_settings(torch.device("cpu"), strategy=strategy, subset=120, query=16))
    loop: ActiveLearningLoop = build_loop(spec, colour_dataset())
    kept: dict[str, object] = {}
    query = loop.strategy.query

    def recording(candidates: np.ndarray, values: dict[str, np.ndarray], k: int, context: QueryContext) -> np.ndarray:
        kept.update(candidates=candidates.copy(), values={key: v.copy() for key, v in values.items()}, k=k,
                    labeled=None if context.labeled_embeddings is None else context.labeled_embeddings.copy())
        return query(candidates, values, k, context)

    loop.strategy.query = recording  # type: ignore[method-assign]
    loop.begin()
    loop.query_batch(spec.query)
    picks = {}
    for where in ("cpu", str(device)):
        context = QueryContext(rng=np.random.default_rng(11), labeled_embeddings=kept["labeled"],  # type: ignore[arg-type]
                               device=torch.device(where))
        picks[where] = build_strategy(strategy).query(kept["candidates"], kept["values"], kept["k"], context)  # type: ignore[arg-type]
    assert len(picks["cpu"]) == spec.query
    assert picks[str(device)].tolist() == picks["cpu"].tolist()


# the six distinct compiled graphs first (resident), then the same graphs fed from the host (compile-cache hits)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "host"])
def test_a_compiled_cycle_trains_evaluates_and_scores(device: torch.device, npy_folder: Path, precision: str,
                                                      channels_last: bool, resident: bool) -> None:
    """As :func:`test_a_cycle_trains_evaluates_and_scores`, through ``torch.compile`` (last: compiling is slow).
    Every model of these tests shares one ``forward``: the compiler's caches are emptied first, so that earlier
    tests' graphs do not use up its recompilation limit (past which it would run the model uncompiled)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    _one_cycle(device, npy_folder, precision, channels_last, resident, compiled=True)
    assert counters["stats"]["unique_graphs"] > graphs, "nothing was compiled"
