"""The ``learnloss`` command line."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from learnloss.cli.boundary import EXIT_USAGE, guarded, refuse_undecodable
from learnloss.cpu_memory import keep_freed_memory
from learnloss.errors import UsageError
from learnloss.project.labelstudio import LabelStudioSetup

if TYPE_CHECKING:
    from learnloss.runs.bench import Arm

__all__ = ["EXIT_USAGE", "build_parser", "main", "parse_arm"]


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


def _version() -> str:
    """The installed distribution's version, else ``unknown`` (a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("learnloss")
    except PackageNotFoundError:
        return "unknown"


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: VALUE)`` to the help of every option with a real default.

    An option whose help already says its default (``default: from --protocol``, ``default: auto``) keeps its text;
    flags (``--quiet``) and options whose default is None — nothing, or decided later — show none, never
    ``default: None``.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or action.default is None
                or action.default is argparse.SUPPRESS or "default" in text):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser that shows defaults in ``--help`` (:class:`_HelpFormatter`); its subcommands are too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


FROM_PROTOCOL = "default: from --protocol"
"""How ``--help`` says that a setting's default is the protocol preset's (:func:`_protocol_defaults`)."""


def _protocol_defaults(parser: argparse.ArgumentParser, names: Sequence[str], protocol: str = "quick") -> None:
    """Say in the help of each option of ``parser`` whose destination is in ``names`` (and whose help does not
    name its default yet) that its default comes from ``--protocol``, with its value under ``protocol``."""
    from learnloss.reports.compare import setting_text
    from learnloss.runs.presets import resolve_spec

    values = resolve_spec(protocol).to_dict()
    for action in parser._actions:  # noqa: SLF001 - argparse keeps no public list of a parser's options
        text = action.help or ""
        if action.dest not in names or action.nargs == 0 or action.help is argparse.SUPPRESS or "default" in text:
            continue
        value = values.get(action.dest)
        shown = FROM_PROTOCOL if value is None else f"{FROM_PROTOCOL}; {setting_text(value)} in {protocol}"
        shown = shown.replace("%", "%%")  # argparse %-formats help texts
        action.help = f"{text} ({shown})" if text else shown


def build_parser() -> argparse.ArgumentParser:
    from learnloss.runs.presets import available_protocols

    parser = _Parser(
        prog="learnloss", description="Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019) and baselines."
    )
    parser.add_argument("--version", action="version", version=f"learnloss {_version()}",
                        help="print learnloss's version and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run a simulated active-learning experiment",
        description="Run a simulated active-learning experiment. --protocol picks a preset; explicit flags "
        "override it. When only --epochs is overridden, the LR milestones and stop-gradient epoch scale with it.",
    )
    run.add_argument("--out", required=True, type=Path, help="output folder for results.json and learning_curve.png")
    run.add_argument("--protocol", default="quick", help=f"preset: {', '.join(available_protocols())}")
    run.add_argument("--strategy", help="learning-loss, random, entropy, least-confidence, margin, core-set, "
                     "true-loss, baal-entropy, baal-bald, stochastic(INNER); parameters as NAME:KEY=VALUE")
    run.add_argument("--seed", type=int, help="seed of every random choice: same seed, same selection")
    _add_settings(run)
    _protocol_defaults(run, ("strategy", "seed", *SETTINGS))
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out after its last completed step (same settings)")
    run.add_argument("--quiet", action="store_true", help="no progress bars; still one line per finished cycle")

    bench = commands.add_parser(
        "bench",
        help="run strategies × seeds under a protocol and write report.md",
        description="Run every strategy at every seed under --protocol into --out (OUT/<strategy>/seed-<s>/), "
        "skipping runs already finished with the same settings, then write OUT/report.md and its plots from every "
        "run in OUT. A strategy may carry setting overrides: learning-loss:lpm-loss=mse:reset=reinit. Other "
        "setting flags apply to every run.",
    )
    bench.add_argument("--out", required=True, type=Path, help="benchmark folder")
    bench.add_argument("--protocol", default="quick", help=f"preset: {', '.join(available_protocols())}")
    bench.add_argument("--strategies", nargs="+", metavar="STRATEGY[:SETTING=VALUE...]",
                       help="arms to run (default: the protocol's benchmark arms)")
    bench.add_argument("--seeds", nargs="+", type=int, help="seeds to run (default: the protocol's benchmark seeds)")
    _add_settings(bench)
    _protocol_defaults(bench, SETTINGS)
    bench.add_argument("--quiet", action="store_true", help="no progress bars; still one line per run")

    compare = commands.add_parser("compare", help="compare runs: AUBC and final accuracy, mean ± std over seeds")
    compare.add_argument("dirs", nargs="+", type=Path, help="run folders, or folders holding run folders")
    compare.add_argument("--plot", type=Path, help="overlay plot path (default: comparison.png in the first folder)")

    init = commands.add_parser("init", help="create a labeling project over a folder of images or a manifest")
    init.add_argument("project", type=Path, help="new project folder")
    source = init.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="image folder: class-per-folder, or flat (then give --classes)")
    source.add_argument("--manifest", type=Path, help="CSV with path[,label][,split]; paths relative to its folder")
    init.add_argument("--task", choices=["classification", "detection", "keypoints"], default="classification",
                      help="what a label holds: a class per image, boxes of --classes, or the --keypoints of one figure")
    init.add_argument("--classes", type=_names,
                      help="comma-separated class names (default: the class folders or manifest labels); detection: "
                      "the object classes")
    init.add_argument("--keypoints", type=_names, help="keypoints task: the keypoint names, in order, comma-separated")
    init.add_argument("--skeleton", type=_edges, help="keypoints task: joined keypoints, e.g. head-neck,neck-hip")
    init.add_argument("--category", help="keypoints task: what the figures are (default: person)")
    init.add_argument("--labels", type=Path, help="initial labels: CSV, JSON or Label Studio export; detection and "
                      "keypoints: Label Studio's JSON export or COCO JSON")
    init.add_argument("--model", help="small-cnn or a resnet (default: small-cnn; detector for detection, hourglass "
                      "for keypoints)")
    init.add_argument("--image-size", type=_positive_int, help="images are resized to this square size (default: 32)")
    init.add_argument("--epochs", type=_positive_int, help="training epochs per query (default: 30)")
    init.add_argument("--strategy", help="the project's query strategy (default: learning-loss)")
    init.add_argument("--seed", type=int, help="seed of every random choice (default: 0)")
    init.add_argument("--color", choices=["auto", "rgb", "grey"], default="auto",
                      help="colour mode of every image: auto (the most common one), rgb or grey")
    _add_label_studio(init)

    add = commands.add_parser(
        "add", help="register more images of the project's data root",
        description="Register new images under the project's data root (a folder inside it, or a CSV manifest "
        "with path[,label][,split] inside it), validated as init does; all or nothing. A folder skips the images "
        "already registered; a manifest must list new ones only.",
    )
    add.add_argument("project", type=Path)
    add_source = add.add_mutually_exclusive_group(required=True)
    add_source.add_argument("--images", type=Path, help="a folder inside the data root")
    add_source.add_argument("--manifest", type=Path, help="CSV with path[,label][,split]; paths relative to its folder")

    query = commands.add_parser("query", help="train on the current labels and write the next batch to label")
    query.add_argument("project", type=Path)
    query.add_argument("--k", type=_positive_int, required=True, help="how many items to query")
    query.add_argument("--strategy", help="override the project's strategy for this query")
    query.add_argument("--device", default="auto", help="auto, cpu or cuda")
    query.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_label_studio(query, change=True)

    serve = commands.add_parser(
        "serve", help="serve a project as a Label Studio ML backend: predictions sorted by score, labels back live",
        description="Answer Label Studio's ML-backend protocol for PROJECT: each task's predicted class with the "
        "strategy's score as the prediction score (sort the Data Manager by it), annotations stored as labels "
        "through the same validated, all-or-nothing path as learnloss label, and retraining in the background every "
        "--retrain-every new labels (one at a time; it records a query of --k, as learnloss query does). Binds to "
        "127.0.0.1; any other --host needs a token (LEARNLOSS_SERVE_TOKEN or --token). Needs the serve extra: "
        "pip install 'learnloss[serve]'.",
    )
    serve.add_argument("project", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_positive_int, default=9090, help="port to listen on")
    serve.add_argument("--token", help="token every request must carry (default: $LEARNLOSS_SERVE_TOKEN; required "
                       "when --host is not a loopback address)")
    serve.add_argument("--retrain-every", type=int, default=20, metavar="N",
                       help="retrain once N labels arrived since the model was trained (0: only on Start training)")
    serve.add_argument("--k", type=_positive_int, default=20, help="size of the query each retraining records")
    serve.add_argument("--strategy", help="strategy that scores (default: the project's)")
    serve.add_argument("--device", default="auto", help="auto, cpu or cuda")
    serve.add_argument("--relabel", action="store_true",
                       help="let a new annotation change a stored label (an updated annotation always may)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="a host name requests may use besides localhost/127.0.0.1/::1 (repeatable); without it, "
                       "any name is accepted when a token is set")
    serve.add_argument("--max-body-mb", type=float, metavar="MIB", help="largest request body (default: 16 MiB)")
    serve.add_argument("--max-tasks", type=_positive_int, metavar="N", help="most tasks per /predict (default: 1000)")
    serve.add_argument("--max-requests", type=_positive_int, metavar="N",
                       help="most requests processed at once; beyond, 503 and retry (default: 8)")

    label = commands.add_parser("label", help="import labels (CSV, JSON, Label Studio export), all or nothing")
    label.add_argument("project", type=Path)
    label.add_argument("file", type=Path)
    label.add_argument("--relabel", action="store_true", help="allow changing stored labels (history is kept)")

    status = commands.add_parser("status", help="counts, cycles, metrics and open queries of a project")
    status.add_argument("project", type=Path)
    status.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser("export", help="every label with its provenance (CSV, JSON), or the current labels "
                                 "as COCO JSON or Label Studio tasks")
    export.add_argument("project", type=Path)
    export.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.json")
    export.add_argument("--format", choices=["csv", "json", "coco", "labelstudio"],
                        help="csv or json: the label history (default: by the file's suffix); coco: COCO JSON; "
                        "labelstudio: Label Studio tasks with their annotations")

    evaluate = commands.add_parser(
        "evaluate", help="evaluate the latest checkpoint of a run or labeling project on a test split",
        description="Load the latest trained cycle of a run folder (learnloss run --out) or a labeling project, "
        "verify its checkpoint, and report the task's test metrics and the LPM's ranking accuracy: on the run's "
        "dataset test split or the project's labeled test items, or on labeled images (--images, --manifest).",
    )
    evaluate.add_argument("folder", type=Path, metavar="RUN_OR_PROJECT")
    labeled = evaluate.add_mutually_exclusive_group()
    labeled.add_argument("--images", type=Path, metavar="DIR",
                         help="labeled images instead: one folder per class, DIR/<class>/*")
    labeled.add_argument("--manifest", type=Path, metavar="FILE.csv",
                         help="labeled images instead: CSV with path,label (paths relative to its folder)")
    evaluate.add_argument("--data-dir", metavar="PATH", help="simulated run: where its dataset's files are now")
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda")
    evaluate.add_argument("--json", action="store_true", help="print JSON")

    doctor = commands.add_parser(
        "doctor", help="check a project or run folder: its database in full, leftover files, unusable items",
        description="Run SQLite's full integrity and foreign-key checks on the store, list orphan checkpoints, "
        "leftover temporary files and (for a labeling project) items whose image is missing, unreadable or outside "
        "the data root, each with the command that fixes it. With --fix, remove what is safe to remove (orphan "
        "checkpoints and temporary files inside the folder). Exit 0 when nothing is wrong, 1 otherwise.",
    )
    doctor.add_argument("project", type=Path, metavar="PROJECT_OR_RUN")
    doctor.add_argument("--fix", action="store_true", help="remove orphan checkpoints and leftover temporary files")
    doctor.add_argument("--json", action="store_true", help="print JSON")

    backup = commands.add_parser(
        "backup", help="copy a project's database to a new file with SQLite's online backup API",
        description="Copy PROJECT/learnloss.db to FILE (which must not exist) while other commands may run: the "
        "source must pass a full integrity check, and the copy is verified before it appears under its name. To "
        "restore, stop every learnloss process on the project and put the backup in place of learnloss.db "
        "(deleting learnloss.db-wal and learnloss.db-shm).",
    )
    backup.add_argument("project", type=Path, metavar="PROJECT_OR_RUN")
    backup.add_argument("file", type=Path, help="the new backup file")

    remove = commands.add_parser(
        "remove", help="retire items of a project (their labels and history are kept)",
        description="Retire items (by id or by path relative to the data root): they are never trained on, "
        "scored or queried again, their open queries close, and their labels and history stay in the store. All "
        "or nothing: an unknown item refuses the whole command.",
    )
    remove.add_argument("project", type=Path)
    remove.add_argument("items", nargs="+", metavar="ITEM", help="item id or path")
    remove.add_argument("--reason", default="removed", help="why, recorded with the item")

    predict = commands.add_parser(
        "predict", help="predict every image of a folder with a run's or project's latest checkpoint",
        description="Score every image under --images (recursively, sorted) with the latest trained cycle: "
        "prediction, confidence and the LPM's predicted loss, one row per image, into FILE.csv or FILE.json.",
    )
    predict.add_argument("folder", type=Path, metavar="RUN_OR_PROJECT")
    predict.add_argument("--images", type=Path, required=True, metavar="DIR",
                         help="folder of images (read, never written)")
    predict.add_argument("--out", type=Path, required=True, metavar="FILE", help="FILE.csv or FILE.json")
    predict.add_argument("--data-dir", metavar="PATH", help="simulated run: where its dataset's files are now")
    predict.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser


SETTINGS = (
    "dataset", "data_dir", "download", "model", "dropout", "layers", "initial", "query", "cycles", "subset", "epochs",
    "batch_size", "optimizer", "lr", "milestones", "lpm_loss", "lpm_weight", "margin", "stop_grad_epoch", "reset", "device", "task",
    "precision", "channels_last", "compile", "drop_easy", "semi_epochs", "semi_lr", "semi_threshold", "semi_lpm_loss",
    "semi_unlabeled", "semi_views",
)
"""Setting flags shared by ``run``, ``bench`` and the overrides of a benchmark arm (as attribute names)."""


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="digits, mnist, fashion-mnist, fashion-mnist-lt, cifar10, cifar100, tiny-imagenet, "
                        "imagefolder, npz, npy, diabetes, scenes, digit-scenes, figures, voc, coco")
    parser.add_argument("--data-dir", help="folder (or .npz file) holding the dataset's files "
                        "(default: $LEARNLOSS_DATA, then ~/.cache/learnloss/DATASET)")
    parser.add_argument("--no-download", dest="download", action="store_false", default=None,
                        help="never download missing dataset files")
    parser.add_argument("--model", help="resnet18, resnet34, resnet50, resnet101, resnet152, small-cnn, mlp (vector inputs), "
                        "detector, hourglass")
    parser.add_argument("--dropout", type=_probability, help="dropout before the classifier (needed by baal-bald)")
    parser.add_argument("--layers", type=lambda s: [p for p in s.split(",") if p],
                        help="comma-separated layers for the LPM (default: the model's own)")
    parser.add_argument("--initial", type=_positive_int, help="initial random labels")
    parser.add_argument("--query", type=_positive_int, help="K: labels added per cycle")
    parser.add_argument("--cycles", type=_positive_int, help="training cycles (cycles-1 queries)")
    parser.add_argument("--subset", type=_subset, help="M: unlabeled samples scored per cycle, or 'all'")
    parser.add_argument("--epochs", type=_positive_int, help="training epochs per cycle")
    parser.add_argument("--batch-size", type=_positive_int, help="mini-batch size")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "rmsprop"],
                        help="optimiser of the model and the LPM (sgd: the paper's; rmsprop: its pose recipe)")
    parser.add_argument("--lr", type=_finite_float, help="learning rate of the model and the LPM")
    parser.add_argument("--milestones", type=_epochs_list, help="epochs where the LR drops ×0.1, e.g. 160")
    parser.add_argument("--lpm-loss", choices=["ranking", "logistic", "mse"],
                        help="ranking loss of the LPM: ranking (the paper's hinge), logistic (pairwise BCE) or mse")
    parser.add_argument("--lpm-weight", type=_finite_float, help="λ, weight of the loss-prediction loss")
    parser.add_argument("--margin", type=_finite_float, help="ξ, margin of the ranking loss")
    parser.add_argument("--stop-grad-epoch", type=_stop_grad, help="epoch from which the LPM's gradient is cut, or 'never'")
    parser.add_argument("--reset", choices=["warm", "reinit"], help="warm-start or re-initialise the model each cycle")
    parser.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--task", help="classification, regression, detection or keypoints (default: the dataset's own task)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                        help="autocast dtype of training, evaluation and scoring: auto is bf16 where the device "
                        "computes it natively (recent GPUs, CPUs with AVX512-BF16 or AMX), else fp32")
    parser.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last memory format for image models (default: from --protocol; on in the "
                        "GPU-sized presets, off in the CPU ones)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="torch.compile the target model (pays back on long cycles only; see the README)")
    parser.add_argument("--drop-easy", type=_probability,
                        help="fraction of labeled samples with the lowest loss that the target model skips")
    semi = parser.add_argument_group("stage B (semi-supervised LPM; used by ssl-lpm)")
    semi.add_argument("--semi-epochs", type=_positive_int, help="epochs of LPM fine-tuning per cycle; paper 30")
    semi.add_argument("--semi-lr", type=_finite_float, help="SGD learning rate of the LPM in stage B; paper 0.01")
    semi.add_argument("--semi-threshold", type=_probability, help="τ: confidence a pseudo-label needs; paper 0.9")
    semi.add_argument("--semi-lpm-loss", choices=["logistic", "ranking", "mse"],
                      help="ranking loss of stage B; the paper's code: logistic")
    semi.add_argument("--semi-unlabeled", type=_subset, help="unlabeled samples per stage-B epoch, or 'all'")
    semi.add_argument("--semi-views", type=_subset,
                      help="augmentation draws run through the frozen model (other epochs reuse them), or 'all'")


def _settings(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in SETTINGS}


class _ArmParser(argparse.ArgumentParser):
    """Parses the ``:setting=value`` part of a benchmark arm with the same flags and checks as ``run``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_arm(spec: str) -> Arm:
    """``learning-loss:lpm-loss=mse:reset=reinit`` -> ``Arm("learning-loss", {"lpm_loss": "mse", "reset": "reinit"})``.

    Keys the strategy takes as parameters (``baal-bald:iterations=5``) stay in the strategy's specification; the
    others are run settings, parsed with the same flags and checks as ``run``.

    Raises:
        UsageError: an unknown setting, a malformed part or a bad value (the message names the arm).
    """
    from learnloss.runs.bench import Arm
    from learnloss.strategies import split_strategy_settings

    strategy, settings = split_strategy_settings(spec)
    argv = []
    for key, value in settings.items():
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
    from learnloss.distributed import current
    from learnloss.jsonio import write_json
    from learnloss.reports.compare import format_curve_table
    from learnloss.reports.plots import plot_learning_curve
    from learnloss.runs.experiment import run_experiment
    from learnloss.runs.presets import resolve_spec

    spec = resolve_spec(args.protocol, {**_settings(args), "strategy": args.strategy, "seed": args.seed})
    if current().is_main:  # under torchrun the other ranks never touch --out
        _check_writable(args.out)

    def on_cycle(result: CycleResult) -> None:  # also with --quiet, which only turns the progress bars off
        lpm = result.lpm_ranking_accuracy
        metrics = ", ".join(f"test {name} {_metric(value)}" for name, value in result.metrics.items())
        tqdm.write(
            f"cycle {result.cycle}: {result.n_labeled} labels, {metrics}"
            + (f", LPM ranking accuracy {_metric(lpm)}" if lpm is not None else ""),
            file=sys.stderr,
        )

    results = run_experiment(spec, progress=not args.quiet, on_cycle=on_cycle, out=args.out, resume=args.resume)
    if not current().is_main:  # under torchrun only rank 0 writes and prints
        return 0
    write_json(args.out / "results.json", results)
    plot_learning_curve(results, args.out / "learning_curve.png")
    config = results["config"]
    print(f"{config['strategy']} on {config['dataset']} ({config['model']}, seed {config['seed']}, reset {config['reset']})")
    print(format_curve_table(results))
    print(f"AUBC {results['aubc']:.4f}")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'learning_curve.png'}")
    return 0


def _metric(value: float | None) -> str:
    """A metric as the command line prints it: four decimals, or ``n/a`` when it is missing or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _cycle_span(cycles: Sequence[int]) -> str:
    """``cycle 0``, ``cycles 0 and 1``, ``cycles 0–3`` (a run's cycles are numbered 0, 1, … without gaps)."""
    if len(cycles) == 1:
        return f"cycle {cycles[0]}"
    if len(cycles) == 2:
        return f"cycles {cycles[0]} and {cycles[1]}"
    return f"cycles {cycles[0]}–{cycles[-1]}"


def run_interrupted_line(args: argparse.Namespace) -> str:
    """What Ctrl-C during ``learnloss run`` prints: the cycles the run's store in ``--out`` keeps (trained and
    evaluated; a resumed run does not train them again) and the exact command that continues it — the same
    arguments with ``--resume`` — or, when no cycle finished, that the run starts over and the command for that."""
    from learnloss.project.store import DB_FILENAME, ProjectStore

    argv = list(args.argv)
    if not (args.out / DB_FILENAME).exists():  # stopped before the store was made: the same command starts it
        if args.resume:  # (only before --resume was checked) without it, as --resume would be refused now
            argv = [a for a in argv if not (len(a) > len("--res") and "--resume".startswith(a))]
        return ("learnloss: interrupted before any cycle finished; nothing was kept, the run starts over with: "
                + shlex.join(["learnloss", *argv]))
    if not args.resume:
        argv.append("--resume")
    command = shlex.join(["learnloss", *argv])
    with ProjectStore(args.out, kind="simulation") as store:
        cycles = [int(row["cycle"]) for row in store.cycles()]
    if not cycles:
        return f"learnloss: interrupted before any cycle finished; nothing was kept, the run starts over with: {command}"
    return (f"learnloss: interrupted; {args.out} keeps the finished {_cycle_span(cycles)} (nothing half-written); "
            f"continue the run with: {command}")


def bench_interrupted_line(args: argparse.Namespace) -> str:
    """What Ctrl-C during ``learnloss bench`` prints: the same command continues the benchmark."""
    return (f"learnloss: interrupted; {args.out} keeps every finished run and the finished cycles of the interrupted "
            f"one; continue the benchmark with the same command: {shlex.join(['learnloss', *args.argv])}")


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
    from learnloss.runs.bench import run_bench
    from learnloss.reports.compare import format_table, group_runs, summarise_groups
    from learnloss.reports.report import write_report
    from learnloss.runs.presets import BENCHMARKS, resolve_spec

    resolve_spec(args.protocol, {})  # an unknown protocol fails before anything else
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


def _add_label_studio(parser: argparse.ArgumentParser, change: bool = False) -> None:
    group = parser.add_argument_group(
        "Label Studio", "where Label Studio finds the images" + (" (changes the project's setting)" if change else ""))
    where = group.add_mutually_exclusive_group()
    where.add_argument("--ls-document-root", type=Path, metavar="DIR",
                       help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, a folder above the data root "
                       + ("" if change else "(default: that variable when set and above the data root, else the data "
                          "root's parent)"))
    where.add_argument("--ls-url-prefix", metavar="URL",
                       help="images are served elsewhere: a task's image URL is URL followed by the item's path")


def _print_label_studio(setup: LabelStudioSetup, config: Path | None = None, tasks: Path | None = None) -> None:
    for line in setup.instructions(config, tasks):
        print(line)


def _names(text: str) -> list[str]:
    """A comma-separated list of names, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _edges(text: str) -> list[tuple[str, str]]:
    """A skeleton: comma-separated ``a-b`` pairs of keypoint names."""
    edges = []
    for part in _names(text):
        a, dash, b = part.partition("-")
        if not dash or not a.strip() or not b.strip():
            raise argparse.ArgumentTypeError(f"a skeleton edge is two keypoint names joined by '-', got {part!r}")
        edges.append((a.strip(), b.strip()))
    return edges


def cmd_init(args: argparse.Namespace) -> int:
    from learnloss.labeling.workflow import init_project

    settings = {key: getattr(args, key) for key in ("model", "image_size", "epochs", "strategy", "seed")}
    counts = init_project(args.project, images=args.images, manifest=args.manifest, classes=args.classes,
                          labels=args.labels, settings={k: v for k, v in settings.items() if v is not None},
                          color=args.color, ls_document_root=args.ls_document_root, ls_url_prefix=args.ls_url_prefix,
                          task=args.task, keypoints=args.keypoints, skeleton=args.skeleton, category=args.category)
    print(f"created {args.project}: {counts['pool']} pool and {counts['test']} test images, {counts['labeled']} labeled")
    print(f"colour: {counts['color']} ({counts['converted']} image(s) converted)")
    for line in counts["skipped"]:
        print(f"  skipped {line}")
    _print_label_studio(counts["label_studio"], args.project / "exports" / "labelstudio-config.xml")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from learnloss.labeling.workflow import add_items

    r = add_items(args.project, images=args.images, manifest=args.manifest)
    print(f"added {r['added']} images to {args.project} ({r['pool']} pool, {r['test']} test, {r['labeled']} labeled; "
          f"{r['skipped']} already registered); colour {r['color']}: {r['converted']} converted")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from learnloss.labeling.workflow import query_project

    from learnloss.distributed import current

    outcome = query_project(args.project, args.k, args.strategy, args.device, progress=not args.quiet,
                            ls_document_root=args.ls_document_root, ls_url_prefix=args.ls_url_prefix)
    if not current().is_main:  # under torchrun rank 0 alone prints
        return 0
    how = "trained" if outcome.trained else "reused the checkpoint of the current labels"
    what = "queried" if outcome.new_query else "no new labels since the last query, so its open items are exported again:"
    print(f"cycle {outcome.cycle}: {how}; {what} {len(outcome.items)} items")
    for kind, path in outcome.files.items():
        print(f"  {kind}: {path}")
    for path in outcome.kept.values():
        print(f"  kept {path}: it changed since learnloss wrote it (labels filled in?), so the re-export went beside "
              f"it; import it with learnloss label {args.project} {path}")
    if outcome.note:
        print(f"  note: {outcome.note}")
    if outcome.label_studio is not None:
        _print_label_studio(outcome.label_studio, outcome.files["labelstudio_config"], outcome.files["labelstudio"])
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from learnloss.labeling.workflow import label_project

    summary = label_project(args.project, args.file, relabel=args.relabel)
    print(f"{summary.file}: {summary.added} added, {summary.relabeled} relabeled, {summary.unchanged} already stored"
          + (f", {len(summary.skipped)} skipped" if summary.skipped else ""))
    for line in summary.skipped:
        print(f"  skipped {line}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    try:
        from learnloss.serve.app import ServeLimits, check_binding, run_server
    except ImportError as error:  # pragma: no cover - the serve extra is part of the test install
        raise UsageError(f"learnloss serve needs the serve extra ({error.name} is missing): pip install "
                         "'learnloss[serve]'") from None
    from learnloss.labeling.backend import LabelStudioBackend, ServeConfig
    from learnloss.labeling.workflow import project_dataset, project_spec, query_project
    from learnloss.runs.evaluate import ProjectReader

    token = args.token or os.environ.get("LEARNLOSS_SERVE_TOKEN") or None
    check_binding(args.host, token)
    given = {name: value for name in ("max_body_mb", "max_tasks", "max_requests")
             if (value := getattr(args, name)) is not None}  # a flag left out keeps ServeLimits' default
    limits = ServeLimits(allowed_hosts=tuple(args.allowed_host), **given)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServeConfig(retrain_every=args.retrain_every, query=args.k, strategy=args.strategy, device=args.device,
                         relabel=args.relabel)
    backend = LabelStudioBackend(args.project, config, ProjectReader(project_spec, project_dataset), query_project)
    if backend.load():
        print(f"model {backend.model_version} loaded")
    else:
        backend.maybe_retrain()
        print("no trained model yet: training on the current labels in the background")
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"Label Studio ML backend for {args.project} on {url}; the prediction score is the {backend.score_meaning()}")
    print("  1. start Label Studio with ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false (it refuses a model "
          "and its webhook on a local address otherwise), besides the local-files settings of learnloss init")
    print(f"  2. in the Label Studio project: Settings → Model → Connect Model, URL {url}"
          + (", Authentication: Basic Auth, any user name, the token as password; then Settings → Webhooks: give "
             "the webhook Label Studio made for the model the header Authorization: Bearer <token>" if token else ""))
    print("  3. Data Manager → select tasks → Actions → Retrieve Predictions; sort by Prediction score, descending")
    sys.stdout.flush()
    run_server(backend, args.host, args.port, token, limits=limits)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from learnloss.jsonio import dumps
    from learnloss.labeling.workflow import project_status

    status = project_status(args.project)
    for cycle in status["cycles"]:  # a metric a cycle lacks is null in JSON, n/a in text (as a NaN one is)
        keys = ("test_accuracy",) if status["task"] == "classification" else ()
        for key in (*keys, "lpm_ranking_accuracy"):
            cycle.setdefault(key, None)
    if args.json:
        print(dumps(status, indent=2))
        return 0
    counts = status["counts"]
    names = "keypoints" if status["task"] == "keypoints" else "classes"
    task = "" if status["task"] == "classification" else f"{status['task']}; "
    print(f"{status['project']} (images in {status['data_root']}); {task}{names}: {', '.join(status['classes'])}")
    print(f"pool {counts['pool']}, test {counts['test']}, labeled {counts['labeled']} ({counts['relabels']} relabels), "
          f"{counts['imports']} imports, {counts['cycles']} cycles")
    for cycle in status["cycles"]:
        tests = [key for key in cycle if key.startswith("test_")] or ["test_accuracy"]
        metrics = ", ".join(f"test {key[5:].replace('_', ' ')} {_metric(cycle.get(key))}" for key in tests)
        print(f"  cycle {cycle['cycle']} ({cycle['status']}): {cycle.get('n_labeled')} labels, {metrics}, "
              f"LPM ranking accuracy {_metric(cycle.get('lpm_ranking_accuracy'))}")
    for cycle, count in status["open_queries"].items():
        print(f"  open: {count} items queried in cycle {cycle}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from learnloss.labeling.workflow import export_labels

    count = export_labels(args.project, args.out, args.format)
    print(f"wrote {count} labels to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from learnloss.jsonio import dumps
    from learnloss.labeling.workflow import project_dataset, project_spec
    from learnloss.runs.evaluate import ProjectReader, evaluate_checkpoint

    result = evaluate_checkpoint(args.folder, images=args.images, manifest=args.manifest, data_dir=args.data_dir,
                                 device=args.device, project=ProjectReader(project_spec, project_dataset))
    if args.json:
        print(dumps(result, indent=2))
        return 0
    print(f"{result['folder']} ({result['kind']}): cycle {result['cycle']}, {result['n_labeled']} labels, "
          f"checkpoint {result['checkpoint']}, on {result['device']}")
    size, source = result["test"]["size"], result["test"]["source"]
    for name, value in result["metrics"].items():
        print(f"test {name} {value:.4f} on {size} samples ({source})")
    if result["lpm_ranking_accuracy"] is not None:
        rho = result["lpm_spearman"]
        print(f"LPM ranking accuracy {result['lpm_ranking_accuracy']:.4f}"
              + ("" if rho is None else f", Spearman {rho:.4f}"))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from learnloss.labeling.workflow import project_dataset, project_spec
    from learnloss.runs.evaluate import ProjectReader, predict_images

    count = predict_images(args.folder, args.images, args.out, device=args.device, data_dir=args.data_dir,
                           project=ProjectReader(project_spec, project_dataset))
    print(f"wrote {count} predictions to {args.out}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from learnloss.jsonio import dumps
    from learnloss.labeling.maintenance import doctor

    report = doctor(args.project, fix=args.fix)
    print(dumps(report.to_dict(), indent=2) if args.json else "\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_backup(args: argparse.Namespace) -> int:
    from learnloss.project.backup import backup

    info = backup(args.project, args.file)
    print(f"wrote {info.path} ({info.size:,} bytes, schema version {info.schema_version}), checked")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from learnloss.labeling.maintenance import remove_items

    for item in remove_items(args.project, args.items, reason=args.reason):
        if item.retired_now:
            print(f"retired item {item.item_id} ({item.source})")
        else:
            print(f"item {item.item_id} ({item.source}) was already retired at {item.retired_at} ({item.reason})")
    return 0


DISTRIBUTED_COMMANDS = ("run", "query")
"""Commands that run under ``torchrun --nproc-per-node N`` as one distributed run (:mod:`learnloss.distributed`)."""


def _in_process_group(command: str, work: Callable[[], int]) -> int:
    """Run ``work`` in the process group ``torchrun`` describes (WORLD_SIZE > 1), leaving it afterwards; as is
    otherwise. A command that cannot run distributed is refused under torchrun rather than run N times."""
    from learnloss.distributed import initialise, launched, shutdown

    if not launched():
        return work()
    if command not in DISTRIBUTED_COMMANDS:
        raise UsageError(f"learnloss {command} runs in one process; start it without torchrun (only "
                         f"{', '.join(DISTRIBUTED_COMMANDS)} runs distributed)")
    initialise()
    try:
        return work()
    finally:
        shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``learnloss`` command; returns the exit code. Under ``torchrun`` (WORLD_SIZE > 1)
    ``learnloss run`` and ``learnloss query`` join the process group first (:mod:`learnloss.distributed`); each rank returns its own exit
    code, and torchrun fails when any rank does."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    keep_freed_memory()  # CPU passes reuse freed tensor memory (learnloss/cpu_memory.py; LEARNLOSS_MALLOC=system: off)
    commands = {"run": cmd_run, "bench": cmd_bench, "compare": cmd_compare, "init": cmd_init, "query": cmd_query,
                "label": cmd_label, "status": cmd_status, "export": cmd_export, "evaluate": cmd_evaluate,
                "predict": cmd_predict, "serve": cmd_serve, "add": cmd_add, "doctor": cmd_doctor, "backup": cmd_backup, "remove": cmd_remove}
    interrupted = {"run": run_interrupted_line, "bench": bench_interrupted_line}.get(args.command)

    def command() -> int:
        refuse_undecodable(argv)  # a name that is not UTF-8 could not be stored, exported or shown
        return _in_process_group(args.command, lambda: commands[args.command](args))

    return guarded(command, on_interrupt=None if interrupted is None else lambda: interrupted(args))


if __name__ == "__main__":
    sys.exit(main())
