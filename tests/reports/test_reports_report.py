"""The benchmark report written from a folder of runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from learnloss.errors import UsageError
from learnloss.reports.report import summarise_arm, write_report
from learnloss.reports.results import ResultsNotFoundError, write_json_atomic


def _store(root: Path, make_results, arm: str, seed: int, accuracies, initial=(1, 2, 3), **config) -> None:
    results = make_results(strategy=arm.split(" ")[0], seed=seed, accuracies=accuracies, arm=arm, **config)
    results["initial_labeled"] = list(initial)
    results["bench"] = {"protocol": "quick", "settings": {}}
    folder = root / arm.replace(" ", "_") / f"seed-{seed}"
    folder.mkdir(parents=True)
    write_json_atomic(folder / "results.json", results)


@pytest.fixture
def bench_dir(tmp_path, make_results):
    for seed in range(3):
        _store(tmp_path, make_results, "random", seed, (0.5, 0.6 + 0.01 * seed, 0.7))
        _store(tmp_path, make_results, "entropy", seed, (0.5, 0.62 + 0.01 * seed, 0.72))
        _store(tmp_path, make_results, "learning-loss", seed, (0.5, 0.70 + 0.01 * seed, 0.80 + 0.001 * seed),
               ranking=(0.6, 0.7, 0.8))
    return tmp_path


def _rows(report: str, heading: str) -> dict[str, list[str]]:
    """The rows of the first table after ``heading``, keyed by their first cell."""
    section = report.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| strategy") and not line.startswith("| labels"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def test_report_tables_plots_and_links(bench_dir):
    path = write_report(bench_dir, command="learnloss bench --protocol quick --out x")
    report = path.read_text()
    assert path == bench_dir / "report.md"
    assert "learnloss bench --protocol quick --out x" in report
    results = _rows(report, "## Results")
    assert list(results) == ["learning-loss", "entropy", "random"], "best AUBC first"
    assert results["learning-loss"][0] == "3"
    assert results["learning-loss"][3] == "0.7000 ± 0.0000"  # ranking accuracy, mean over cycles then seeds
    assert results["random"][3] == "–"
    assert results["random"][4] == "–"  # no candidate ranking without an LPM
    assert results["random"][5] == "2.5" and results["random"][6] == "0.25"  # seconds per cycle
    against_random = _rows(report, "### Against random")
    assert against_random["learning-loss"][0].startswith("+0.")
    assert against_random["learning-loss"][2].startswith("higher (wins 3/3")
    assert "Paired: within each seed" in report
    assert (bench_dir / "learning_curves.png").stat().st_size > 0
    assert (bench_dir / "lpm_ranking.png").stat().st_size > 0
    assert "(learning-loss/seed-0/results.json)" in report


def test_variants_are_also_paired_against_their_plain_strategy(bench_dir, make_results):
    for seed in range(3):
        _store(bench_dir, make_results, "learning-loss (reset=reinit)", seed, (0.5, 0.66 + 0.01 * seed, 0.75),
               ranking=(0.6, 0.6, 0.6))
    report = write_report(bench_dir).read_text()
    variants = _rows(report, "### Variants against the same strategy")
    assert list(variants) == ["learning-loss (reset=reinit)"]
    assert variants["learning-loss (reset=reinit)"][0].startswith("-0.")
    assert "learning-loss (reset=reinit)" in _rows(report, "### Against random")


def test_every_distinct_command_that_filled_the_folder_is_listed(bench_dir):
    write_report(bench_dir, command="learnloss bench --out x")
    write_report(bench_dir, command="learnloss bench --out x --strategies learning-loss:reset=reinit")
    report = write_report(bench_dir, command="learnloss bench --out x").read_text()
    assert "```bash\nlearnloss bench --out x\nlearnloss bench --out x --strategies learning-loss:reset=reinit\n```" in report


def test_notes_are_included_as_findings(bench_dir):
    (bench_dir / "notes.md").write_text("Warm start beat re-initialisation.\n")
    report = write_report(bench_dir).read_text()
    assert "## Findings\n\nWarm start beat re-initialisation." in report


def test_unpaired_initial_sets_are_flagged(tmp_path, make_results):
    for seed in range(2):
        _store(tmp_path, make_results, "random", seed, (0.5, 0.6), initial=(1, 2))
        _store(tmp_path, make_results, "entropy", seed, (0.5, 0.7), initial=(1, 2) if seed == 0 else (3, 4))
    assert "**Warning: not paired.** Seeds 1 started" in write_report(tmp_path).read_text()


def test_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsNotFoundError, match="no results.json"):
        write_report(tmp_path)


def test_summary_times_skip_the_last_cycle_without_a_query(make_results):
    run = make_results(accuracies=(0.5, 0.6, 0.7))
    run["cycles"][-1]["query_seconds"] = 0.0
    summary = summarise_arm("random", [run])
    assert summary.query_seconds == pytest.approx(0.25)
    assert summary.train_seconds == pytest.approx(2.5)


def test_a_regression_benchmark_reports_its_primary_metric(tmp_path, make_results):
    for seed in range(2):
        _store(tmp_path, make_results, "random", seed, (0.1, 0.2 + 0.01 * seed, 0.3), metric="test_r2")
        _store(tmp_path, make_results, "entropy", seed, (0.1, 0.3 + 0.01 * seed, 0.4), metric="test_r2")
    report = write_report(tmp_path).read_text()
    assert "| strategy | seeds | AUBC | final r2 | LPM ranking acc." in report
    assert "Mean test r2 per label count." in report
    assert _rows(report, "## Results")["entropy"][2] == "0.4000 ± 0.0000"
    assert summarise_arm("random", [make_results(metric="test_r2")]).metric == "test_r2"


def test_a_benchmark_mixing_primary_metrics_is_refused(tmp_path, make_results):
    _store(tmp_path, make_results, "random", 0, (0.5, 0.6))
    _store(tmp_path, make_results, "entropy", 0, (0.1, 0.2), metric="test_r2")
    with pytest.raises(UsageError, match="different primary metrics"):
        write_report(tmp_path)
