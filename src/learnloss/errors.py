"""Typed errors a user can cause.

Every error a user can trigger derives from :class:`LearnLossError`; the command line turns it into one line
on stderr and exits with :attr:`LearnLossError.exit_code` (2 for usage errors, 1 for failures at run time).
"""

from __future__ import annotations


class LearnLossError(Exception):
    """Base class of all errors that a user of learnloss can cause."""

    exit_code: int = 1


class UsageError(LearnLossError, ValueError):
    """A setting, name or count is invalid (exit code 2)."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """A dataset, strategy, model, protocol or loss name is not registered."""

    def __init__(self, kind: str, name: str, available: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.available = kind, name, sorted(available)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.available)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class LayerNotFoundError(UsageError, KeyError):
    """A tap names a submodule that the model does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


class FeatureShapeError(UsageError):
    """A tapped layer produces an output the loss prediction module cannot read."""


class DatasetNotFoundError(UsageError, FileNotFoundError):
    """The files of a dataset are missing and could not be downloaded."""


class DatasetFormatError(UsageError):
    """The files of a dataset exist but are malformed."""


class BudgetError(UsageError):
    """The requested labels exceed what the pool can provide."""


class TrainingDivergedError(LearnLossError):
    """Training produced a NaN or infinite loss."""
