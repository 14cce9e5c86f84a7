"""The inference layer: streaming forward passes over a pool, keeping only what selection needs."""

from learnloss.inference.stream import BatchOutputs, Need, stream
from learnloss.inference.view import ModelView

__all__ = ["BatchOutputs", "ModelView", "Need", "stream"]
