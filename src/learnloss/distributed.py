"""The process group of a ``torchrun`` launch, as one small context: rank, world size, barriers, gathers.

``torchrun --nproc-per-node N -m learnloss run …`` starts ``N`` processes, each with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment. :func:`initialise` joins them into one
process group — gloo for CPU tensors, and NCCL for CUDA tensors when CUDA is available (each rank then runs on
``cuda:LOCAL_RANK``) — and :func:`current` is the context the loop, the trainer and the run read. Without
``WORLD_SIZE`` > 1 nothing is initialised and :func:`current` is :data:`SINGLE`, rank 0 of 1, whose every helper
does nothing: one process runs exactly as it did before distribution existed.

What each rank does is decided elsewhere (``active/loop.py``, ``training/stages.py``, ``runs/experiment.py``); this
module only offers the collectives, each named by what it waits for:

* :meth:`Distributed.all_gather`, :meth:`Distributed.broadcast` — picklable Python objects (numpy arrays, lists);
* :meth:`Distributed.all_reduce_mean_`, :meth:`Distributed.broadcast_module_` — tensors, in place;
* :meth:`Distributed.on_main`, :meth:`Distributed.from_main`, :meth:`Distributed.main_first` — work only rank 0
  does (the store, the downloads), with its outcome shared: when rank 0 fails, every rank fails with its message
  instead of waiting;
* :meth:`Distributed.wrap` — the target model in :class:`~torch.nn.parallel.DistributedDataParallel`.

Failure: every collective waits at most the timeout, ``LEARNLOSS_DIST_TIMEOUT`` seconds (1800 by default, torch's
own); a rank that dies closes its connections, and the others fail at their next collective at once. Either way
the failure becomes a :class:`DistributedError` — one line and exit code 1 through the command line's error
boundary — never a hang. ``torchrun`` itself stops the other ranks with SIGTERM as soon as one fails; a rank
joined by :func:`initialise` turns that signal into a :class:`DistributedError` too, so it unwinds (open store
transactions roll back, temporary files go) and says why in one line.
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import nn

from learnloss.errors import LearnLossError, UsageError

__all__ = [
    "DEFAULT_TIMEOUT", "SINGLE", "TIMEOUT_ENV", "Distributed", "DistributedError", "RankFailedError", "current",
    "initialise", "launched", "shutdown",
]

TIMEOUT_ENV = "LEARNLOSS_DIST_TIMEOUT"
"""Seconds a rank waits in a collective for the others before the run fails."""
DEFAULT_TIMEOUT = 1800.0

T = TypeVar("T")

# What a failed collective says, in torch's and gloo's words: a lost peer or a wait past the timeout.
_COLLECTIVE_FAILURE = re.compile(r"gloo|nccl|connection (closed|reset|refused)|timed out|timeout|pair closure|"
                                 r"broken pipe|socket", re.IGNORECASE)


class DistributedError(LearnLossError):
    """A collective failed: another rank died, or did not answer within the timeout (exit code 1)."""


class RankFailedError(LearnLossError):
    """Rank 0 failed in work only it does (the store, a download); the other ranks stop with its message and its
    exit code instead of waiting for it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _detail(error: BaseException) -> str:
    """The gist of a torch/gloo error: without the source location in brackets, the first sentence."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".")


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a distributed run; :data:`SINGLE` (rank 0 of 1) when there is none.

    Attributes:
        rank: this process's rank, 0 … ``world_size - 1``; rank 0 is the one that writes.
        world_size: the number of processes.
        local_rank: the rank on this machine (the CUDA device index).
        timeout: seconds a collective waits (for messages; the process group holds the real limit).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout: float = DEFAULT_TIMEOUT

    @property
    def active(self) -> bool:
        """Whether there are other ranks (a process group of more than one process)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the only one that writes results, stores and checkpoints."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    # ------------------------------------------------------------------------------------------ failures

    def failure(self, what: str, error: BaseException) -> DistributedError:
        """The one-line error of a collective that failed while waiting for ``what``."""
        return DistributedError(
            f"{self}: {what} failed: {_detail(error)} — another process stopped or did not answer within "
            f"{self.timeout:g} s; see the other ranks' messages (set {TIMEOUT_ENV} to wait longer)"
        )

    @contextmanager
    def guard(self, what: str, always: bool = False) -> Iterator[None]:
        """Turn a failed collective inside the block (a lost rank, a timeout) into a :class:`DistributedError`.
        With ``always`` every :class:`RuntimeError` is one (the block runs collectives only); otherwise only a
        :class:`torch.distributed.DistError` or an error that names the transport (the block also computes, e.g.
        DDP's gradient all-reduce inside ``backward``). Nothing changes in one process."""
        if not self.active:
            yield
            return
        try:
            yield
        except RuntimeError as error:
            if always or isinstance(error, torch.distributed.DistError) or _COLLECTIVE_FAILURE.search(str(error)):
                raise self.failure(what, error) from None
            raise

    # ------------------------------------------------------------------------------------------ collectives

    def barrier(self, what: str) -> None:
        """Wait until every rank has reached this point (``what``: what the ranks wait for, for errors)."""
        if self.active:
            with self.guard(what, always=True):
                torch.distributed.barrier()

    def all_gather(self, value: T, what: str) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order; ``[value]`` in one process."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world_size
        with self.guard(what, always=True):
            torch.distributed.all_gather_object(out, value)
        return out

    def broadcast(self, value: T, what: str, src: int = 0) -> T:
        """Rank ``src``'s ``value`` (picklable) on every rank; ``value`` itself in one process."""
        if not self.active:
            return value
        box: list[Any] = [value if self.rank == src else None]
        with self.guard(what, always=True):
            torch.distributed.broadcast_object_list(box, src=src)
        return box[0]

    def all_reduce_mean_(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Replace each tensor (all of one dtype and device) by its mean over the ranks, in one collective."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        with self.guard(what, always=True):
            torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset: offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()

    @torch.no_grad()
    def broadcast_module_(self, module: nn.Module, what: str) -> None:
        """Copy rank 0's parameters and buffers (BatchNorm statistics included) into ``module`` on every rank."""
        if not self.active:
            return
        with self.guard(what, always=True):
            for tensor in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)

    # ------------------------------------------------------------------------------------------ rank 0's work

    def _share_outcome(self, error: BaseException | None, value: Any, what: str) -> Any:
        """Rank 0: send ``value`` or the failure; the others: receive it, raising rank 0's failure as theirs."""
        if self.is_main:
            if error is None:
                self.broadcast(("ok", value), what)
                return value
            code = error.exit_code if isinstance(error, LearnLossError) else 74 if isinstance(error, OSError) else 1
            try:
                self.broadcast(("failed", (str(error) or type(error).__name__, code)), what)
            except DistributedError:
                pass  # the others are gone too; rank 0's own error is what to say
            return None
        received: Any = self.broadcast(None, what)
        status, payload = received
        if status == "failed":
            message, code = payload
            raise RankFailedError(f"{self} stopped because rank 0 failed: {message}", code)
        return payload

    def on_main(self, work: Callable[[], T], what: str) -> T | None:
        """Run ``work`` on rank 0 only and let every rank know how it went: rank 0 gets its value, the others None
        — or, when it raised, rank 0 raises it and the others a :class:`RankFailedError` with its message. In one
        process: ``work()``."""
        if not self.active:
            return work()
        if not self.is_main:
            self._share_outcome(None, None, what)
            return None
        try:
            value = work()
        except Exception as error:
            self._share_outcome(error, None, what)
            raise
        self._share_outcome(None, None, what)
        return value

    def from_main(self, work: Callable[[], T], what: str) -> T:
        """Run ``work`` on rank 0 only and return its (picklable) value on every rank; a failure as in
        :meth:`on_main`."""
        if not self.active:
            return work()
        if not self.is_main:
            return self._share_outcome(None, None, what)  # type: ignore[no-any-return]
        try:
            value = work()
        except Exception as error:
            self._share_outcome(error, None, what)
            raise
        return self._share_outcome(None, value, what)  # type: ignore[no-any-return]

    @contextmanager
    def main_first(self, what: str) -> Iterator[None]:
        """Run the block on rank 0 first, then on the others (a download that every rank then reads); when it
        fails on rank 0 the others fail with its message instead of running it."""
        if not self.active:
            yield
            return
        if self.is_main:
            try:
                yield
            except Exception as error:
                self._share_outcome(error, None, what)
                raise
            self._share_outcome(None, None, what)
        else:
            self._share_outcome(None, None, what)
            yield

    # ------------------------------------------------------------------------------------------ models, shards

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA (a rank never shares a GPU), else ``device``."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` for training (the gradients of its
        parameters are averaged over the ranks in ``backward``); ``model`` itself in one process or when nothing
        in it trains. Forward hooks on its submodules (the LPM's taps) keep firing inside the wrapper, and
        ``model`` keeps its own ``state_dict`` names: save the inner module, never the wrapper. Every parameter
        that requires a gradient must take part in the forward pass (``find_unused_parameters`` is off)."""
        if not self.active or not any(p.requires_grad for p in model.parameters()):
            return model
        parameter = next(model.parameters())
        device_ids = [parameter.device.index] if parameter.device.type == "cuda" else None
        with self.guard("wrapping the model in DistributedDataParallel", always=True):
            return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def owned(self, count: int) -> list[int]:
        """Which of ``count`` items (batches) this rank takes: ``rank, rank + world_size, …`` — all in one process."""
        return list(range(self.rank, count, self.world_size))


SINGLE = Distributed()
"""One process: rank 0 of 1, every collective a no-op."""


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or alike) as one of several: ``WORLD_SIZE`` > 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def current() -> Distributed:
    """The context of this process: its rank in the initialised default process group, or :data:`SINGLE`."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return SINGLE
    world = torch.distributed.get_world_size()
    if world <= 1:
        return SINGLE
    return Distributed(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0") or 0), _timeout())


def initialise() -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) with the :data:`TIMEOUT_ENV` timeout; :data:`SINGLE` when ``WORLD_SIZE`` is
    unset or 1. Idempotent.

    Raises:
        UsageError: the environment is incomplete or malformed.
        DistributedError: the other ranks could not be reached.
    """
    if not launched():
        return SINGLE
    if torch.distributed.is_initialized():
        return current()
    if not torch.distributed.is_available():
        raise UsageError("this torch build has no torch.distributed; run learnloss without torchrun")
    try:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    except (KeyError, ValueError) as error:
        raise UsageError(f"WORLD_SIZE is set, but RANK or LOCAL_RANK is missing or malformed ({error}); start "
                         "learnloss with torchrun") from None
    timeout = _timeout()
    cuda = torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); start at most "
                             "that many processes per node")
        torch.cuda.set_device(local_rank)
    context = Distributed(rank, world, local_rank, timeout)
    try:
        torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", rank=rank, world_size=world,
                                             timeout=timedelta(seconds=timeout))
    except ValueError as error:
        raise UsageError(f"cannot join the process group: {_detail(error)}; start learnloss with torchrun") from None
    except RuntimeError as error:
        raise context.failure("joining the process group", error) from None
    _on_sigterm(context)
    return context


_previous_sigterm: Any = None


def _on_sigterm(context: Distributed) -> None:
    """Raise a :class:`DistributedError` when the launcher stops this rank (SIGTERM: another rank failed)."""
    global _previous_sigterm

    def stop(signum: int, frame: Any) -> None:
        raise DistributedError(f"{context}: stopped by the launcher (SIGTERM), which stops every rank once one "
                               "fails; see the failed rank's message")

    if threading.current_thread() is threading.main_thread():
        _previous_sigterm = signal.signal(signal.SIGTERM, stop)


def shutdown() -> None:
    """Leave the process group, if this process joined one (errors of a group whose peers are gone are ignored)."""
    global _previous_sigterm
    if _previous_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _previous_sigterm)
        _previous_sigterm = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except (RuntimeError, ValueError):
            pass
