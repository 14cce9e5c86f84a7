"""Reporting of active-learning runs: metrics, the ``results.json`` schema, plots and comparison tables.

Metrics follow Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019 (ranking accuracy of the loss
prediction module) and Zhan et al. 2021, "A comparative survey of deep active learning" (AUBC); benchmark
reports pair strategies seed by seed.
"""

from __future__ import annotations

from learnloss.reports.compare import (
    ComparisonRow,
    ComparisonWarning,
    compare_runs,
    find_results,
    format_curve_table,
    format_table,
    group_runs,
    label_runs,
    strategy_label,
    summarise_groups,
)
from learnloss.metrics import aubc, mean_std, ranking_accuracy, spearman
from learnloss.reports.paired import PairedDifference, paired_difference
from learnloss.reports.plots import plot_comparison, plot_learning_curve
from learnloss.reports.report import write_report
from learnloss.reports.results import (
    RESULTS_FILENAME,
    ResultsFormatError,
    ResultsNotFoundError,
    common_primary_metric,
    environment_info,
    load_results,
    metric_label,
    primary_metric,
    validate_results,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "RESULTS_FILENAME",
    "ComparisonRow",
    "ComparisonWarning",
    "PairedDifference",
    "ResultsFormatError",
    "ResultsNotFoundError",
    "aubc",
    "common_primary_metric",
    "compare_runs",
    "environment_info",
    "find_results",
    "format_curve_table",
    "format_table",
    "group_runs",
    "label_runs",
    "load_results",
    "mean_std",
    "metric_label",
    "paired_difference",
    "plot_comparison",
    "plot_learning_curve",
    "primary_metric",
    "ranking_accuracy",
    "spearman",
    "strategy_label",
    "summarise_groups",
    "validate_results",
    "write_json_atomic",
    "write_report",
    "write_text_atomic",
]
