"""Benchmarks: every arm (a strategy with optional setting overrides) × every seed under one protocol.

Runs go to ``OUT/<arm>/seed-<seed>/results.json``. A run whose ``results.json`` exists and was made with the
same settings is skipped, so an interrupted benchmark resumes where it stopped: every run is journaled in a
project store in its folder (:mod:`learnloss.runs.journal`), so a run killed mid-way continues after its
last completed step, and ``results.json`` is written atomically at its end. A run folder made with other
settings is never overwritten: the benchmark stops and names the settings that differ. ``OUT`` is the root of
every write (:func:`learnloss.atomic.atomic_write`): a run folder, or the arm's folder above it, that is a symbolic
link is refused before the run starts, so nothing outside ``OUT`` is written.

Within a seed every arm starts from the same initial labeled set and the same initial weights (the loop draws
both from the seed alone), so differences between arms are paired; the report checks this from the recorded
initial sets.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnloss.atomic import make_folder
from learnloss.errors import UsageError
from learnloss.jsonio import write_json
from learnloss.project.database import DB_FILENAME
from learnloss.reports.compare import setting_text
from learnloss.reports.plots import plot_learning_curve
from learnloss.reports.results import RESULTS_FILENAME, load_results
from learnloss.runs.experiment import run_experiment
from learnloss.runs.presets import resolve_spec
from learnloss.runs.spec import RunSpec, spec_differences

__all__ = ["Arm", "BenchRun", "plan_runs", "run_bench"]

@dataclass(frozen=True)
class Arm:
    """One line of a benchmark: a strategy, optionally with settings that differ from the protocol's.

    ``Arm("learning-loss", {"lpm_loss": "mse"})`` is the paper's MSE ablation; its label is
    ``learning-loss (lpm_loss=mse)`` and its folder ``learning-loss__lpm_loss=mse``.
    """

    strategy: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "strategy" in self.overrides or "seed" in self.overrides:
            raise UsageError(f"arm {self.strategy!r}: the strategy and the seed are set by the benchmark grid")

    @property
    def label(self) -> str:
        """The name the report uses."""
        if not self.overrides:
            return self.strategy
        return f"{self.strategy} ({', '.join(f'{k}={setting_text(v)}' for k, v in sorted(self.overrides.items()))})"

    @property
    def folder(self) -> str:
        """A file-system-safe folder name for the arm's runs."""
        parts = [self.strategy] + [f"{k}={setting_text(v)}" for k, v in sorted(self.overrides.items())]
        return re.sub(r"[^A-Za-z0-9_.=-]+", "-", "__".join(parts))


@dataclass(frozen=True)
class BenchRun:
    """One cell of the grid: an arm at a seed, its folder, and the specification it runs."""

    arm: Arm
    seed: int
    folder: Path
    spec: RunSpec


def plan_runs(
    protocol: str, arms: Sequence[Arm], seeds: Sequence[int], out: Path, overrides: Mapping[str, Any] | None = None
) -> list[BenchRun]:
    """The grid in run order (seed-major, so a partial benchmark already holds complete pairs). Every cell's
    specification is resolved — and so every name and value checked — before the first run starts.

    Raises:
        UsageError: no arms or no seeds, a repeated arm or seed, or an unknown protocol, strategy, model or
            dataset.
    """
    if not arms:
        raise UsageError("a benchmark needs at least one strategy")
    if not seeds:
        raise UsageError("a benchmark needs at least one seed")
    named: tuple[tuple[str, list[str]], ...] = (("arm", [arm.folder for arm in arms]), ("seed", [str(s) for s in seeds]))
    for what, items in named:
        repeated = sorted({i for i in items if items.count(i) > 1})
        if repeated:
            raise UsageError(f"the benchmark lists the same {what} twice: {', '.join(repeated)}")
    plan = []
    for seed in seeds:
        for arm in arms:
            given = {**(overrides or {}), **arm.overrides, "strategy": arm.strategy, "seed": seed}
            plan.append(BenchRun(arm, seed, out / arm.folder / f"seed-{seed}", resolve_spec(protocol, given)))
    return plan


def _number(value: float | None) -> str:
    return "undefined" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _finished(run: BenchRun) -> bool:
    """Whether ``run`` already has results made with its specification; a mismatch is an error, not a re-run."""
    path = run.folder / RESULTS_FILENAME
    if not path.exists():
        return False
    bench = load_results(path).get("bench")
    settings = bench.get("settings") if isinstance(bench, dict) else None
    if not isinstance(settings, dict):
        raise UsageError(f"{path} records no benchmark settings, so it cannot be matched to this benchmark; "
                         f"benchmark into another --out, or delete {run.folder} to run it again")
    differ = spec_differences(settings, run.spec)
    if differ:
        shown = "; ".join(differ[:4]) + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
        raise UsageError(
            f"{path} was made with other settings ({shown}); benchmark into another --out, or delete "
            f"{run.folder} to run it again"
        )
    return True


def run_bench(
    protocol: str,
    arms: Sequence[Arm],
    seeds: Sequence[int],
    out: str | Path,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[BenchRun]:
    """Run every arm at every seed into ``out``, skipping runs already finished with the same settings.

    Each run writes ``results.json`` (with ``config.arm`` set to the arm's label, and ``bench`` holding the
    resolved settings it was asked for) and ``learning_curve.png``.
    Every cell is planned and checked against stored results before the first run starts, so a bad name or a
    conflicting folder fails at once. Returns the plan; :func:`learnloss.reports.report.write_report` turns
    the folder into ``report.md``.
    """
    say = log or (lambda line: print(line, file=sys.stderr))
    out = Path(out)
    plan = plan_runs(protocol, arms, seeds, out, overrides)
    todo = [run for run in plan if not _finished(run)]
    say(f"benchmark {protocol}: {len(plan)} runs, {len(plan) - len(todo)} already done")
    for number, run in enumerate(todo, 1):
        say(f"[{number}/{len(todo)}] {run.arm.label}, seed {run.seed}")
        out.mkdir(parents=True, exist_ok=True)  # OUT itself is the user's to name (a link to it is followed)
        make_folder(out, run.folder)  # real folders below OUT, never a link to elsewhere
        resume = (run.folder / DB_FILENAME).exists()  # a run killed mid-way continues after its last step
        results = run_experiment(run.spec, progress=progress, out=run.folder, resume=resume,
                                 log=lambda line: say(f"    {line}"), require_test=True)
        results["config"]["arm"] = run.arm.label
        results["bench"] = {"protocol": protocol, "settings": run.spec.to_dict()}
        plot_learning_curve(results, run.folder / "learning_curve.png", root=out)
        write_json(run.folder / RESULTS_FILENAME, results, root=out)  # last: its presence marks the run done
        primary = results["primary_metric"]
        final = results["cycles"][-1][primary]
        say(f"    AUBC {_number(results['aubc'])}, final {primary.replace('_', ' ')} {_number(final)}, "
            f"{results['wall_seconds']:.1f} s")
    return plan
