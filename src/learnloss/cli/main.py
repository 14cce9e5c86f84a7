"""The ``learnloss`` command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from learnloss.errors import LearnLossError, UsageError

if TYPE_CHECKING:
    from learnloss.bench import Arm

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _subset(text: str) -> int | str:
    return "all" if text.lower() == "all" else _positive_int(text)


def _epochs_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 160 or 80,120, got {text!r}") from None


def _stop_grad(text: str) -> int | str:
    if text.lower() == "never":
        return "never"
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected an epoch ≥ 0 or 'never', got {text!r}")
    return value


def _probability(text: str) -> float:
    value = _finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from learnloss.protocols import available_protocols

    parser = argparse.ArgumentParser(
        prog="learnloss", description="Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019) and baselines."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run a simulated active-learning experiment",
        description="Run a simulated active-learning experiment. --protocol picks a preset; explicit flags "
        "override it. When only --epochs is overridden, the LR milestones and stop-gradient epoch scale with it.",
    )
    run.add_argument("--out", required=True, type=Path, help="output folder for results.json and learning_curve.png")
    run.add_argument("--protocol", default="quick", help=f"preset: {', '.join(available_protocols())} (default quick)")
    run.add_argument("--strategy", help="learning-loss, random, entropy, least-confidence, margin, core-set, "
                     "true-loss, baal-entropy, baal-bald")
    run.add_argument("--seed", type=int)
    _add_settings(run)
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    bench = commands.add_parser(
        "bench",
        help="run strategies × seeds under a protocol and write report.md",
        description="Run every strategy at every seed under --protocol into --out (OUT/<strategy>/seed-<s>/), "
        "skipping runs already finished with the same settings, then write OUT/report.md and its plots from every "
        "run in OUT. A strategy may carry setting overrides: learning-loss:lpm-loss=mse:reset=reinit. Other "
        "setting flags apply to every run.",
    )
    bench.add_argument("--out", required=True, type=Path, help="benchmark folder")
    bench.add_argument("--protocol", default="quick", help=f"preset: {', '.join(available_protocols())} (default quick)")
    bench.add_argument("--strategies", nargs="+", metavar="STRATEGY[:SETTING=VALUE...]",
                       help="arms to run (default: the protocol's benchmark arms)")
    bench.add_argument("--seeds", nargs="+", type=int, help="seeds to run (default: the protocol's benchmark seeds)")
    _add_settings(bench)
    bench.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = commands.add_parser("compare", help="compare runs: AUBC and final accuracy, mean ± std over seeds")
    compare.add_argument("dirs", nargs="+", type=Path, help="run folders, or folders holding run folders")
    compare.add_argument("--plot", type=Path, help="overlay plot path (default: comparison.png in the first folder)")
    return parser


SETTINGS = (
    "dataset", "data_dir", "download", "model", "dropout", "layers", "initial", "query", "cycles", "subset", "epochs",
    "batch_size", "lr", "milestones", "lpm_loss", "lpm_weight", "margin", "stop_grad_epoch", "reset", "device",
)
"""Setting flags shared by ``run``, ``bench`` and the overrides of a benchmark arm (as attribute names)."""


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="digits, mnist, fashion-mnist, cifar10, cifar100, tiny-imagenet, imagefolder, npz")
    parser.add_argument("--data-dir", help="folder (or .npz file) holding the dataset's files")
    parser.add_argument("--no-download", dest="download", action="store_false", default=None,
                        help="never download missing dataset files")
    parser.add_argument("--model", help="resnet18, resnet34, resnet50, resnet101, resnet152, small-cnn")
    parser.add_argument("--dropout", type=_probability, help="dropout before the classifier (needed by baal-bald)")
    parser.add_argument("--layers", type=lambda s: [p for p in s.split(",") if p], help="comma-separated layers for the LPM")
    parser.add_argument("--initial", type=_positive_int, help="initial random labels")
    parser.add_argument("--query", type=_positive_int, help="K: labels added per cycle")
    parser.add_argument("--cycles", type=_positive_int, help="training cycles (cycles-1 queries)")
    parser.add_argument("--subset", type=_subset, help="M: unlabeled samples scored per cycle, or 'all'")
    parser.add_argument("--epochs", type=_positive_int)
    parser.add_argument("--batch-size", type=_positive_int)
    parser.add_argument("--lr", type=_finite_float)
    parser.add_argument("--milestones", type=_epochs_list, help="epochs where the LR drops ×0.1, e.g. 160")
    parser.add_argument("--lpm-loss", choices=["ranking", "mse"])
    parser.add_argument("--lpm-weight", type=_finite_float, help="λ, weight of the loss-prediction loss")
    parser.add_argument("--margin", type=_finite_float, help="ξ, margin of the ranking loss")
    parser.add_argument("--stop-grad-epoch", type=_stop_grad, help="epoch from which the LPM's gradient is cut, or 'never'")
    parser.add_argument("--reset", choices=["warm", "reinit"], help="warm-start or re-initialise the model each cycle")
    parser.add_argument("--device", help="auto, cpu or cuda (default auto)")


def _settings(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in SETTINGS}


class _ArmParser(argparse.ArgumentParser):
    """Parses the ``:setting=value`` part of a benchmark arm with the same flags and checks as ``run``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_arm(spec: str) -> Arm:
    """``learning-loss:lpm-loss=mse:reset=reinit`` -> ``Arm("learning-loss", {"lpm_loss": "mse", "reset": "reinit"})``.

    Raises:
        UsageError: an unknown setting, a malformed part or a bad value (the message names the arm).
    """
    from learnloss.bench import Arm

    strategy, *parts = spec.split(":")
    argv = []
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"strategy {spec!r}: expected SETTING=VALUE after ':', got {part!r}")
        argv += [f"--{key.strip().replace('_', '-')}", value]
    parser = _ArmParser(prog=spec, add_help=False)
    _add_settings(parser)
    try:
        overrides = {key: value for key, value in _settings(parser.parse_args(argv)).items() if value is not None}
    except UsageError as error:
        raise UsageError(f"strategy {spec!r}: {error}") from None
    if not strategy.strip():
        raise UsageError(f"strategy {spec!r}: the strategy name is missing")
    return Arm(strategy.strip(), overrides)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the output folder {folder}: {error.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"the output folder {folder} is not writable; choose another --out")


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from learnloss.active.loop import CycleResult
    from learnloss.experiment import run_experiment
    from learnloss.reports.compare import format_curve_table
    from learnloss.reports.plots import plot_learning_curve
    from learnloss.reports.results import write_json_atomic

    _check_writable(args.out)
    overrides = {**_settings(args), "strategy": args.strategy, "seed": args.seed}

    def on_cycle(result: CycleResult) -> None:
        if args.quiet:
            return
        lpm = result.lpm_ranking_accuracy
        tqdm.write(
            f"cycle {result.cycle}: {result.n_labeled} labels, test accuracy {result.test_accuracy:.4f}"
            + (f", LPM ranking accuracy {lpm:.4f}" if lpm is not None else ""),
            file=sys.stderr,
        )

    results = run_experiment(args.protocol, overrides, progress=not args.quiet, on_cycle=on_cycle)
    write_json_atomic(args.out / "results.json", results)
    plot_learning_curve(results, args.out / "learning_curve.png")
    config = results["config"]
    print(f"{config['strategy']} on {config['dataset']} ({config['model']}, seed {config['seed']}, reset {config['reset']})")
    print(format_curve_table(results))
    print(f"AUBC {results['aubc']:.4f}")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'learning_curve.png'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from learnloss.reports.compare import format_table, group_runs, summarise_groups
    from learnloss.reports.plots import plot_comparison

    groups = group_runs(args.dirs)
    print(format_table(summarise_groups(groups)))
    plot = args.plot or (args.dirs[0] / "comparison.png")
    plot_comparison(groups, plot)
    print(f"wrote {plot}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from learnloss.bench import run_bench
    from learnloss.protocols import BENCHMARKS, resolve_settings
    from learnloss.reports.compare import format_table, summarise_groups, group_runs
    from learnloss.reports.report import write_report

    resolve_settings(args.protocol, {})  # an unknown protocol fails before anything else
    plan = BENCHMARKS.get(args.protocol, {})
    specs = args.strategies or plan.get("arms")
    seeds = args.seeds if args.seeds is not None else plan.get("seeds")
    if not specs or seeds is None:
        raise UsageError(f"protocol {args.protocol} has no default benchmark; give --strategies and --seeds")
    arms = [parse_arm(spec) for spec in specs]
    _check_writable(args.out)
    run_bench(args.protocol, arms, list(seeds), args.out, _settings(args), progress=not args.quiet)
    report = write_report(args.out, command="learnloss " + shlex.join(args.argv))
    print(format_table(summarise_groups(group_runs([args.out]))))
    print(f"wrote {report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``learnloss`` command; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return {"run": cmd_run, "bench": cmd_bench, "compare": cmd_compare}[args.command](args)
    except LearnLossError as error:
        print(f"learnloss: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("learnloss: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
