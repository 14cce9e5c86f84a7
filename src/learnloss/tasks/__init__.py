"""Tasks: the per-sample loss and the metric of a kind of problem."""

from learnloss.tasks.base import Metric, Task
from learnloss.tasks.classification import Accuracy, ClassificationTask

__all__ = ["Accuracy", "ClassificationTask", "Metric", "Task"]
