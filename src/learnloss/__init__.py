"""learnloss: Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019) for any PyTorch model.

Attach a loss prediction module to your model with :func:`attach`, train it jointly with
:class:`Trainer` (and, semi-supervised, with :class:`SemiSupervisedLPM` — Hwang, Choi & Choi, IEEE Access 2024),
and rank unlabeled samples with :class:`LearningLossStrategy`, :class:`SSLLPM` or any baseline, in an
:class:`ActiveLearningLoop` — built by hand, or from a :class:`RunSpec` (:func:`resolve_spec`) with
:func:`build_loop`. The layers of the package are written down in ARCHITECTURE.md.
"""

from learnloss.active.loop import ActiveLearningLoop, CycleResult, LoopConfig
from learnloss.active.oracle import GroundTruthOracle, HumanOracle, Oracle
from learnloss.active.pool import Pool
from learnloss.inference import BatchOutputs, ModelView, Need
from learnloss.inference.precision import Precision
from learnloss.data.dataset import AugmentSpec, Dataset
from learnloss.cpu_memory import keep_freed_memory
from learnloss.errors import LearnLossError, UsageError
from learnloss.lpm import (
    FeatureTaps,
    LearningLoss,
    LossPredictionModule,
    attach,
    logistic_ranking_loss,
    margin_ranking_loss,
    mse_loss,
)
from learnloss.strategies import (
    SSLLPM,
    Badge,
    CoreSet,
    DiverseSelection,
    Entropy,
    LearningLossStrategy,
    LeastConfidence,
    Margin,
    RandomSampling,
    StochasticBatchAcquisition,
    Strategy,
    StrategySpec,
    TrueLoss,
    WrapperStrategy,
    build_strategy,
    parse_strategy,
    shortlist_cluster,
)
from learnloss.tasks import ClassificationTask, DetectionTask, KeypointTask, RegressionTask, Task, build_task
from learnloss.training import (
    CycleData,
    JointTraining,
    SemiConfig,
    SemiSupervisedLPM,
    Stage,
    TrainConfig,
    Trainer,
)

__version__ = "0.1.0"

__all__ = [
    "SSLLPM",
    "ActiveLearningLoop",
    "Badge",
    "DiverseSelection",
    "SemiConfig",
    "SemiSupervisedLPM",
    "logistic_ranking_loss",
    "shortlist_cluster",
    "CycleData",
    "HumanOracle",
    "JointTraining",
    "Precision",
    "RegressionTask",
    "DetectionTask",
    "KeypointTask",
    "RunSpec",
    "Stage",
    "StochasticBatchAcquisition",
    "StrategySpec",
    "WrapperStrategy",
    "build_loop",
    "build_task",
    "keep_freed_memory",
    "parse_strategy",
    "resolve_spec",
    "run_experiment",
    "AugmentSpec",
    "BatchOutputs",
    "ClassificationTask",
    "CoreSet",
    "CycleResult",
    "Dataset",
    "Entropy",
    "FeatureTaps",
    "GroundTruthOracle",
    "LearnLossError",
    "LearningLoss",
    "LearningLossStrategy",
    "LeastConfidence",
    "LoopConfig",
    "LossPredictionModule",
    "Margin",
    "ModelView",
    "Need",
    "Oracle",
    "Pool",
    "RandomSampling",
    "Strategy",
    "Task",
    "TrainConfig",
    "Trainer",
    "TrueLoss",
    "UsageError",
    "attach",
    "build_strategy",
    "build_model",
    "load_dataset",
    "margin_ranking_loss",
    "mse_loss",
]


_RUNS = {"RunSpec": "learnloss.runs.spec", "resolve_spec": "learnloss.runs.presets",
         "build_loop": "learnloss.runs.builder", "run_experiment": "learnloss.runs.experiment"}


def __getattr__(name: str):  # noqa: ANN202 - lazy re-exports of the heavier registries and the run side
    if name in _RUNS:
        import importlib

        return getattr(importlib.import_module(_RUNS[name]), name)
    if name == "build_model":
        from learnloss.models import build_model

        return build_model
    if name == "load_dataset":
        from learnloss.data import load_dataset

        return load_dataset
    raise AttributeError(f"module 'learnloss' has no attribute {name!r}")
