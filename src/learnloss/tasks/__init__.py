"""Tasks: the per-sample loss, the targets and the metrics of a kind of problem."""

from __future__ import annotations

from learnloss.errors import UnknownNameError
from learnloss.tasks.base import Metric, Task
from learnloss.tasks.classification import Accuracy, ClassificationTask
from learnloss.tasks.detection import DetectionTask, MeanAP, MeanAP50
from learnloss.tasks.keypoints import PCK, KeypointTask, MeanError
from learnloss.tasks.regression import R2, RMSE, RegressionTask

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (ClassificationTask, RegressionTask, KeypointTask, DetectionTask)}


def available_tasks() -> list[str]:
    """Names accepted by :func:`build_task`."""
    return sorted(TASKS)


def build_task(name: str) -> Task:
    """The task registered as ``name`` (``classification``, ``regression``, ``keypoints``, ``detection``)."""
    try:
        return TASKS[name]()
    except KeyError:
        raise UnknownNameError("task", name, available_tasks()) from None


__all__ = [
    "PCK",
    "R2",
    "RMSE",
    "TASKS",
    "Accuracy",
    "ClassificationTask",
    "DetectionTask",
    "MeanAP",
    "MeanAP50",
    "KeypointTask",
    "MeanError",
    "Metric",
    "RegressionTask",
    "Task",
    "available_tasks",
    "build_task",
]
