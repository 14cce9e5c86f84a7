"""The benchmark report: ``report.md`` and its plots, from every run in a benchmark folder.

Per strategy: seeds, AUBC (Zhan et al. 2021) and the final value of the runs' primary metric (test accuracy for
classification, R² for regression) as mean ± population std, the loss prediction
module's ranking accuracy on test pairs (Yoo & Kweon, CVPR 2019, Sec. 4.1), wall time per cycle, and paired
differences against random and entropy with a significance statement (:mod:`learnloss.reports.paired`). A
``notes.md`` in the folder — findings written by a person — is included verbatim under "Findings".
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learnloss.metrics import mean_std
from learnloss.reports.compare import curve_aubc, group_runs
from learnloss.reports.paired import paired_difference
from learnloss.reports.plots import plot_comparison
from learnloss.reports.results import (
    DEFAULT_PRIMARY_METRIC,
    common_primary_metric,
    metric_label,
    write_text_atomic,
)

__all__ = ["BASELINES", "REPORT_FILENAME", "ArmSummary", "summarise_arm", "write_report"]

REPORT_FILENAME = "report.md"
NOTES_FILENAME = "notes.md"
COMMANDS_FILENAME = "commands.txt"
#: Every strategy is compared, seed by seed, against these (docs/pitfalls.md §10).
BASELINES = ("random", "margin", "entropy", "learning-loss")
#: Settings shown in the report's header, in this order.
_SHOWN_SETTINGS = (
    "dataset", "model", "dropout", "initial", "query", "cycles", "subset", "epochs", "batch_size", "lr",
    "momentum", "weight_decay", "milestones", "lpm_loss", "lpm_weight", "margin", "stop_grad_epoch", "lpm_width",
    "reset", "augment", "layers", "drop_easy", "semi_epochs", "semi_lr", "semi_threshold", "semi_lpm_loss",
    "semi_unlabeled", "semi_views",
)


@dataclass(frozen=True)
class ArmSummary:
    """One strategy over its seeds. Times are seconds per cycle, averaged over cycles and seeds; the query time
    is over cycles that made a query (all but the last). ``lpm_ranking`` is the mean over seeds of each run's
    mean ranking accuracy over cycles (None without an LPM); ``candidate_ranking`` the same on the unlabeled
    candidates each querying cycle scored (None where not measured). ``final_accuracy`` holds the last cycle's value of
    ``metric``, the runs' primary metric (``test_accuracy``, ``test_r2``, ...); the name stays for callers."""

    label: str
    strategy: str
    aubc: dict[int, float]
    final_accuracy: dict[int, float]
    lpm_ranking: float | None
    lpm_ranking_std: float | None
    train_seconds: float
    query_seconds: float
    initial_sets: dict[int, tuple[int, ...] | None]
    metric: str = DEFAULT_PRIMARY_METRIC
    candidate_ranking: float | None = None
    candidate_ranking_std: float | None = None

    @property
    def seeds(self) -> list[int]:
        return sorted(self.aubc)


def summarise_arm(label: str, runs: Sequence[Mapping[str, Any]]) -> ArmSummary:
    """Reduce the runs (one per seed) of one strategy to an :class:`ArmSummary`.

    Raises:
        UsageError: the runs have different primary metrics.
        ResultsFormatError: a run has no cycles or a cycle lacks the primary metric.
    """
    metric = common_primary_metric(runs)
    aubcs: dict[int, float] = {}
    finals: dict[int, float] = {}
    initial: dict[int, tuple[int, ...] | None] = {}
    ranking: list[float] = []
    candidates: list[float] = []
    train: list[float] = []
    query: list[float] = []
    for run in runs:
        seed, cycles = int(run["config"]["seed"]), run["cycles"]
        aubcs[seed] = curve_aubc(run, metric)
        finals[seed] = float(cycles[-1][metric])
        ranks = [c["lpm_ranking_accuracy"] for c in cycles if c.get("lpm_ranking_accuracy") is not None]
        if ranks:
            ranking.append(float(np.nanmean(ranks)))
        scored = [c["candidate_ranking_accuracy"] for c in cycles if c.get("candidate_ranking_accuracy") is not None]
        if scored:
            candidates.append(float(np.nanmean(scored)))
        train.extend(float(c["train_seconds"]) for c in cycles)
        query.extend(float(c["query_seconds"]) for c in cycles[:-1])
        stored = run.get("initial_labeled")
        initial[seed] = tuple(sorted(stored)) if stored is not None else None
    rank_mean, rank_std = mean_std(ranking) if ranking else (None, None)
    candidate_mean, candidate_std = mean_std(candidates) if candidates else (None, None)
    return ArmSummary(
        label, str(runs[0]["config"]["strategy"]), aubcs, finals, rank_mean, rank_std, float(np.mean(train)),
        float(np.mean(query)) if query else 0.0, initial, metric, candidate_mean, candidate_std,
    )


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _final_name(metric: str) -> str:
    """``final accuracy`` for ``test_accuracy``, ``final r2`` for ``test_r2``."""
    return "final " + metric_label(metric.removeprefix("test_"))


def _summary_table(arms: Sequence[ArmSummary], metric: str) -> str:
    rows = []
    for arm in arms:
        rank = "–" if arm.lpm_ranking is None else _pm(arm.lpm_ranking, arm.lpm_ranking_std or 0.0)
        scored = "–" if arm.candidate_ranking is None else _pm(arm.candidate_ranking, arm.candidate_ranking_std or 0.0)
        rows.append((
            arm.label, str(len(arm.seeds)), _pm(*mean_std(list(arm.aubc.values()))),
            _pm(*mean_std(list(arm.final_accuracy.values()))), rank, scored, f"{arm.train_seconds:.1f}",
            f"{arm.query_seconds:.2f}",
        ))
    header = ("strategy", "seeds", "AUBC", _final_name(metric), "LPM ranking acc. (test)",
              "LPM ranking acc. (candidates)", "train s/cycle", "query s/cycle")
    return _table(header, rows)


def _paired_table(pairs: Sequence[tuple[ArmSummary, ArmSummary]], against: str) -> str:
    rows = []
    for arm, base in pairs:
        diff = paired_difference(arm.aubc, base.aubc)
        seed_std = max(mean_std(list(arm.aubc.values()))[1], mean_std(list(base.aubc.values()))[1])
        beyond = "yes" if abs(diff.mean) > seed_std else "no"
        rows.append((arm.label, f"{diff.mean:+.4f} ± {diff.std:.4f}", beyond, diff.verdict()))
    return _table(("strategy", f"ΔAUBC vs {against}", "beyond seed std", "paired t-test"), rows)


def _paired_section(arms: Sequence[ArmSummary]) -> str:
    """Every arm against each of :data:`BASELINES` present; every arm with overrides against its strategy's plain
    arm."""
    by_label = {arm.label: arm for arm in arms}
    parts = [
        f"### Against {baseline}\n\n"
        + _paired_table([(arm, by_label[baseline]) for arm in arms if arm.label != baseline], baseline)
        for baseline in BASELINES if baseline in by_label
    ]
    ablations = [(arm, by_label[arm.strategy]) for arm in arms if arm.label != arm.strategy and arm.strategy in by_label]
    if ablations:
        parts.append(
            "### Variants against the same strategy with the protocol's settings\n\n"
            + _paired_table(ablations, "the protocol's settings")
        )
    return "\n\n".join(parts)


def _curve_table(groups: Mapping[str, list[dict[str, Any]]], key: str, labels: Sequence[str]) -> str:
    points: dict[str, dict[int, list[float]]] = {}
    for label in labels:
        for run in groups[label]:
            for cycle in run["cycles"]:
                value = cycle.get(key)
                if value is not None and math.isfinite(float(value)):
                    points.setdefault(label, {}).setdefault(int(cycle["n_labeled"]), []).append(float(value))
    shown = [label for label in labels if label in points]
    counts = sorted({n for label in shown for n in points[label]})
    rows = [
        [str(n)] + [
            f"{np.mean(points[label][n]):.4f}" if n in points[label] else "–" for label in shown
        ]
        for n in counts
    ]
    return _table(["labels"] + shown, rows) if shown else ""


def _pairing_note(arms: Sequence[ArmSummary]) -> str:
    per_seed: dict[int, set[tuple[int, ...]]] = {}
    unknown = 0
    for arm in arms:
        for seed, initial in arm.initial_sets.items():
            if initial is None:
                unknown += 1
            else:
                per_seed.setdefault(seed, set()).add(initial)
    broken = sorted(seed for seed, sets in per_seed.items() if len(sets) > 1)
    if broken:
        return (f"**Warning: not paired.** Seeds {', '.join(map(str, broken))} started from different initial "
                "labeled sets across strategies; the paired tests below are not valid for them.")
    note = "Paired: within each seed every strategy started from the same initial labeled set (checked)."
    return note + (f" {unknown} runs did not record their initial set." if unknown else "")


def _settings_section(runs: Sequence[Mapping[str, Any]]) -> str:
    first = runs[0]
    config, env = first["config"], first.get("environment", {})
    varying = {key for key in _SHOWN_SETTINGS if len({repr(r["config"].get(key)) for r in runs}) > 1}
    rows = [
        (key, "varies by strategy (see its label)" if key in varying else f"`{config.get(key)}`")
        for key in _SHOWN_SETTINGS if key in config
    ]
    device = env.get("device_name") or env.get("device")
    environment = (
        f"torch {env.get('torch')}, Python {env.get('python')}, device `{env.get('device')}` ({device}), "
        f"{env.get('cpu_count')} CPUs, {env.get('torch_threads')} torch threads"
    )
    return _table(("setting", "value"), rows) + f"\n\nEnvironment of the first run: {environment}."


def _record_command(out: Path, command: str | None) -> list[str]:
    """The distinct commands that filled ``out`` (kept in ``commands.txt``), ``command`` added if new."""
    path = out / COMMANDS_FILENAME
    commands = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if command and command not in commands:
        commands.append(command)
        write_text_atomic(path, "\n".join(commands) + "\n")
    return commands


def write_report(out: str | os.PathLike[str], command: str | None = None) -> Path:
    """Write ``report.md``, ``learning_curves.png`` and (when any run has an LPM) ``lpm_ranking.png`` into
    ``out`` from every run found under it; returns the report's path.

    ``command`` is the benchmark invocation that filled ``out``; every distinct one is kept in
    ``commands.txt`` and the report lists them all, so a folder filled in several steps can be reproduced.

    Raises:
        ResultsNotFoundError, ResultsFormatError: ``out`` holds no runs, or a malformed one.
    """
    out = Path(out)
    groups = group_runs([out])
    arms = sorted((summarise_arm(label, runs) for label, runs in groups.items()),
                  key=lambda arm: -float(np.mean(list(arm.aubc.values()))))
    labels = [arm.label for arm in arms]
    all_runs = [run for runs in groups.values() for run in runs]
    metric = common_primary_metric(all_runs)
    protocol = all_runs[0].get("bench", {}).get("protocol") or all_runs[0]["config"].get("protocol", "?")

    plot_comparison(groups, out / "learning_curves.png", metric=metric)
    has_lpm = any(arm.lpm_ranking is not None for arm in arms)
    if has_lpm:
        plot_comparison(groups, out / "lpm_ranking.png", metric="lpm_ranking_accuracy")
    paired = _paired_section(arms)

    commands = _record_command(out, command)
    sections = [f"# Benchmark `{protocol}`"]
    if commands:
        sections.append("Reproduce with:\n\n```bash\n" + "\n".join(commands) + "\n```")
    sections += [
        "## Settings\n\n" + _settings_section(all_runs),
        f"## Results\n\nAUBC (of the {metric_label(metric)} curve) and {_final_name(metric)} are mean ± population "
        "std over seeds; LPM ranking accuracy is the fraction of pairs the loss prediction module orders "
        "correctly, averaged over cycles: of test pairs, and of the unlabeled candidates each querying cycle "
        "scored (their true losses are known in a simulation). Best AUBC first.\n\n"
        + _summary_table(arms, metric) + "\n\n![learning curves](learning_curves.png)",
    ]
    if paired:
        sections.append(
            "## Paired differences\n\n" + _pairing_note(arms) + " ΔAUBC is the mean ± std over seeds of the "
            "per-seed difference; the verdict is a two-sided paired t-test at p < 0.05 (with few seeds only large, "
            "consistent differences reach it).\n\n" + paired
        )
    sections.append(f"## Learning curves\n\nMean {metric_label(metric)} per label count.\n\n"
                    + _curve_table(groups, metric, labels))
    if has_lpm:
        sections.append("## Loss prediction module\n\nMean ranking accuracy on test pairs per label count.\n\n"
                        + _curve_table(groups, "lpm_ranking_accuracy", labels) + "\n\n![LPM ranking](lpm_ranking.png)")
        candidates = _curve_table(groups, "candidate_ranking_accuracy", labels)
        if candidates:
            sections.append("Mean ranking accuracy on the unlabeled candidates scored for the query made at each "
                            "label count.\n\n" + candidates)
    notes = out / NOTES_FILENAME
    if notes.is_file():
        sections.append("## Findings\n\n" + notes.read_text(encoding="utf-8").strip())
    sections.append("## Runs\n\n" + "\n".join(
        f"- {label}: " + ", ".join(
            f"[seed {run['config']['seed']}]({Path(run['_path']).parent.relative_to(out.resolve()).as_posix()}/results.json)"
            for run in groups[label]
        ) for label in labels
    ))
    path = out / REPORT_FILENAME
    write_text_atomic(path, "\n\n".join(sections) + "\n")
    return path
