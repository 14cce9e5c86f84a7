"""Reporting of active-learning runs: metrics, the ``results.json`` schema, plots and comparison tables.

Metrics follow Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019 (ranking accuracy of the loss
prediction module) and Zhan et al. 2021, "A comparative survey of deep active learning" (AUBC).
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
    strategy_label,
    summarise_groups,
)
from learnloss.reports.metrics import aubc, mean_std, ranking_accuracy, spearman
from learnloss.reports.plots import plot_comparison, plot_learning_curve
from learnloss.reports.results import (
    RESULTS_FILENAME,
    ResultsFormatError,
    ResultsNotFoundError,
    environment_info,
    load_results,
    validate_results,
    write_json_atomic,
)

__all__ = [
    "RESULTS_FILENAME",
    "ComparisonRow",
    "ComparisonWarning",
    "ResultsFormatError",
    "ResultsNotFoundError",
    "aubc",
    "compare_runs",
    "environment_info",
    "find_results",
    "format_curve_table",
    "format_table",
    "group_runs",
    "load_results",
    "mean_std",
    "plot_comparison",
    "plot_learning_curve",
    "ranking_accuracy",
    "spearman",
    "strategy_label",
    "summarise_groups",
    "validate_results",
    "write_json_atomic",
]
