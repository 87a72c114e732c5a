"""``python -m mmgraph.train``: train a :class:`~mmgraph.models.FusionModel` on a benchmark data set
(:func:`load_dataset`) or a user's ``.npz`` (:func:`load_npz`) with :func:`~mmgraph.training.fit`, then evaluate it on
a held-out test part and write the run's files (checkpoint, per-epoch and test metrics, optionally the model)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmgraph.data import registry
from mmgraph.data.registry import BUILTIN_DATASETS
from mmgraph.models.factory import TEMPORAL_WINDOW, UNIMODAL_WEIGHT
from mmgraph.training.config import OPTIMIZERS, SCHEDULERS, TrainConfig
from mmgraph.training.distributed import _abandon_distributed, _finish_distributed
from mmgraph.training.loop import FitResult, fit
from mmgraph.training.prediction import evaluate
from mmgraph.utils import check_int as _check_int
from mmgraph.utils import seed_everything

__all__ = ["DATASETS", "DEFAULTS", "load_dataset", "load_npz", "main"]

logger = logging.getLogger("mmgraph.train")  # the name it had before the package split


DATASETS = BUILTIN_DATASETS  # the built-in names; --dataset takes any registered one (mmgraph.data.registry)


def load_dataset(name: str, seed: int = 0, samples: int | None = None, data_dir: str | Path | None = None):
    """The registered data set ``name`` as a :class:`~mmgraph.data.MultiModalDataset` (``samples`` sizes the
    synthetic ones, ``data_dir`` holds the files of mosi, mosei and avmnist): :func:`mmgraph.data.load_dataset`."""
    if samples is not None:
        _check_int("samples", samples, 10)
    return registry.load_dataset(name, seed=seed, samples=samples, data_dir=data_dir)


# the training settings come from TrainConfig (one place for every default); the model and split ones are the CLI's
DEFAULTS: dict[str, Any] = {**{key: getattr(TrainConfig, key) for key in ("epochs", "patience", "batch_size", "lr",
                                                                          "weight_decay", "optimizer", "scheduler",
                                                                          "label_smoothing")},
                            "dim": 64, "modality_dropout": 0.2, "unimodal_weight": UNIMODAL_WEIGHT, "val_size": 0.2}


def load_npz(path: str | Path, targets: Sequence[str] = ("label",)):
    """A user's data set from a ``.npz`` file as a :class:`~mmgraph.data.MultiModalDataset`.

    The file holds one array per modality under its name (``[N, ...]``; a unicode string array ``[N]`` is text),
    the targets under ``label`` (or the keys named in ``targets``; integer arrays are classes, float arrays
    regression, strings class names) and, optionally, boolean ``<modality>_mask`` arrays ``[N]`` (True = present)
    and ``<modality>_step_mask`` arrays ``[N, T]`` (True = real step of a padded sequence ``[N, T, D]``; see
    :func:`mmgraph.data.pad_ragged`). Every other key is a modality.
    The reader is :meth:`MultiModalDataset.from_npz <mmgraph.data.MultiModalDataset.from_npz>`'s; unicode arrays
    become text; integer arrays ``[N, L]`` are token ids, integer arrays of 3 or more dimensions (``uint8`` images
    ``[N, C, H, W]``, frames ``[N, T, D]``) numbers; with text or step masks, the data set gets ``from_columns``' kinds.
    """
    from mmgraph.data import MultiModalDataset
    from mmgraph.data.columns import column_to_tensor
    from mmgraph.data.npz import read_npz

    arrays, labels, masks, steps = read_npz(path, tuple(targets), arg="--data")
    features, kinds = {}, {}
    for name, array in arrays.items():
        # unicode arrays are text; integer arrays [N, L] stay token ids; integer arrays of 3 or more dims (uint8
        # images [N, C, H, W], frames [N, T, D]) cannot be token ids and are numbers, as from_columns reads them
        if array.dtype.kind in "USf" or (array.dtype.kind in "iu" and array.ndim >= 3):
            kinds[name], features[name], _, _ = column_to_tensor(
                name, array.tolist() if array.dtype.kind in "US" else array)
        else:
            features[name] = array
    dataset = MultiModalDataset(features, labels, mask=masks or None, step_mask=steps or None, name=Path(path).stem)
    if "text" in kinds.values() or steps:  # the user's own raw forms: the defaults of MultiModalDataset.from_columns
        dataset.kinds = kinds
    return dataset


def _encoder_choices(values: Sequence[str] | None) -> dict[str, str]:
    """``--encoder MODALITY=KIND ...`` as ``{modality: encoder name}``."""
    choices = {}
    for value in values or ():
        name, sep, kind = value.partition("=")
        if not sep or not name or not kind:
            raise ValueError(f"--encoder: expected MODALITY=KIND (e.g. image=spatial_cnn), got {value!r}")
        choices[name] = kind
    return choices


# mmgraph.gnn.READOUTS and mmgraph.gnn.position.POSITIONALS, written out so that the command line starts without
# importing PyG (tests/test_cli.py checks that they agree)
_READOUTS = ("mean", "max", "sum", "attention", "concat", "concat_attention")
_POSITIONALS = ("sinusoidal", "learned")


def _parser(prog: str = "python -m mmgraph.train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a FusionModel on a benchmark dataset or your own .npz: stratified 80/20 train/test split "
                    "with a validation part carved from train, standardised with train statistics, early stopping "
                    "on validation, metrics on test. Writes DIR/checkpoint.pt, DIR/metrics.csv (per epoch) and "
                    "DIR/metrics.json (test metrics).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=registry.available_datasets())
    source.add_argument("--data", type=Path, metavar="FILE.npz",
                        help="your data: one array per modality under its name (unicode string arrays [N] are "
                             "text), targets under 'label' (or --targets), optional boolean '<modality>_mask' "
                             "arrays [N] and '<modality>_step_mask' arrays [N, T] for padded sequences")
    parser.add_argument("--targets", nargs="+", default=["label"], metavar="KEY",
                        help="target arrays of --data (default: label); integer = classes, float = regression")
    parser.add_argument("--fusion", default="gnn", help="a registered fusion name (default: gnn)")
    parser.add_argument("--encoder", nargs="+", default=None, metavar="MODALITY=KIND",
                        help="choose a modality's encoder (e.g. image=spatial_cnn audio=conv1d text=vocab_text); "
                             "default: chosen per kind by FusionModel.from_dataset")
    parser.add_argument("--epochs", type=_number(int, 1), default=DEFAULTS["epochs"])
    parser.add_argument("--patience", type=_number(int, 1), default=DEFAULTS["patience"],
                        help="epochs without validation improvement before stopping")
    parser.add_argument("--batch-size", type=_number(int, 1), default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=_number(float, 0, strict=True), default=DEFAULTS["lr"])
    parser.add_argument("--weight-decay", type=_number(float, 0), default=DEFAULTS["weight_decay"])
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS["optimizer"])
    parser.add_argument("--scheduler", choices=[s for s in SCHEDULERS if s], default=DEFAULTS["scheduler"])
    parser.add_argument("--label-smoothing", type=_number(float, 0, below=1), default=DEFAULTS["label_smoothing"])
    parser.add_argument("--dim", type=_number(int, 1), default=DEFAULTS["dim"], help="embedding width of every "
                        "modality")
    parser.add_argument("--modality-dropout", type=_number(float, 0, below=1), default=DEFAULTS["modality_dropout"])
    parser.add_argument("--unimodal-weight", type=_number(float, 0), default=DEFAULTS["unimodal_weight"],
                        help="weight of the unimodal auxiliary heads' loss (classification tasks; 0: none)")
    gnn = parser.add_argument_group("GNN fusion (--fusion gnn)")
    gnn.add_argument("--conv", choices=("gcn", "gat", "gatv2", "sage"), default=None)
    gnn.add_argument("--layers", type=_number(int, 0), default=None)
    gnn.add_argument("--heads", type=_number(int, 1), default=None, help="GAT heads (must divide --dim)")
    gnn.add_argument("--relations", default=None, help="complete, star, star:<modality> or chain")
    gnn.add_argument("--readout", choices=_READOUTS, default=None)
    gnn.add_argument("--positional", choices=("none", *_POSITIONALS), default=None,
                     help="position codes added to sequence modalities' temporal nodes (default: sinusoidal; "
                          "none: nodes know no position)")
    gnn.add_argument("--temporal-window", type=_number(int, 0), default=None,
                     help=f"sequence modalities: edges between steps up to this far apart (default: {TEMPORAL_WINDOW} "
                          "when some modality gives temporal nodes)")
    gnn.add_argument("--edge-pruning", type=_number(float, 0, below=1), default=None,
                     help="GAT/GATv2: fraction of each node's in-edges dropped after every layer, lowest attention "
                          "first (MTAG-style; default 0 = off)")
    gnn.add_argument("--gnn-dropout", type=_number(float, 0, below=1), default=None,
                     help="dropout on each message-passing layer's update (default 0.1)")
    parser.add_argument("--val-size", type=_number(float, 0, strict=True, below=1), default=DEFAULTS["val_size"],
                        help="fraction of the training part held out for validation")
    parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                        help="z-score float modalities with training statistics kept inside the model, so a "
                             "--save-model file takes raw arrays (default: on)")
    parser.add_argument("--samples", type=_number(int, 10), default=None, help="size of a synthetic dataset")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder with the files of --dataset mosi, mosei or avmnist (docs/data.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=_number(int, 1), default=1,
                        help="CPU threads for torch (default 1: these small models run fastest single-threaded, "
                             "and far faster than with threads competing for busy cores); results are "
                             "reproducible at the same thread count on the same device")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default: runs/DATASET-FUSION, or runs/FILE-FUSION for --data)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    run.add_argument("--overwrite", action="store_true", help="start over even if --out holds a checkpoint")
    parser.add_argument("--save-model", type=Path, default=None, metavar="PATH",
                        help="also write the trained model as one self-describing file (FusionModel.save)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log, only the summary")
    parser.add_argument("--explain", type=int, default=0, metavar="N",
                        help="write explain_<i>.png (the modality graph: readout weights, attention) for the first N "
                             "test samples; needs the gnn fusion")
    return parser


def _number(kind: type, low: float, strict: bool = False, below: float | None = None):
    """An argparse ``type`` for an int/float in a range, so a bad value is a one-line usage error."""
    bounds = f"{'>' if strict else '>='} {low}" + (f" and < {below}" if below is not None else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an int' if kind is int else 'a number'} {bounds}, got "
                                             f"{text!r}") from None
        if value < low or (strict and value == low) or (below is not None and value >= below) or value != value:
            raise argparse.ArgumentTypeError(f"expected {'an int' if kind is int else 'a number'} {bounds}, got "
                                             f"{text!r}")
        return value

    return parse


RUN_FILES = ("checkpoint.pt", "metrics.csv", "metrics.json")
LOCK_FILE = "run.lock"


def _prepare_out(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> None:
    """Refuse to overwrite an earlier run's checkpoint unless asked, and check that ``out`` can be written and
    that ``--save-model`` names a file that can be, before any data is loaded or any epoch is trained (``out`` is
    locked already: see :func:`_lock_out`)."""
    if (out / "checkpoint.pt").exists() and not (args.resume or args.overwrite):
        parser.error(f"--out: {str(out)!r} already holds the checkpoint of an earlier run; pass --resume to "
                     "continue it or --overwrite to start over")
    problem = _writable_folder(out)
    if problem:
        parser.error(f"--out: cannot write to {str(out)!r} ({problem})")
    if args.save_model is not None:
        problem = _save_model_problem(args.save_model, out)
        if problem:
            parser.error(f"--save-model: {problem}")
    if args.resume and not (out / "checkpoint.pt").exists():
        logger.warning("--resume: no checkpoint in %s; starting a new run", out)


def _writable_folder(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (None if one can)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def _save_model_problem(path: Path, out: Path) -> str | None:
    """Why the model cannot be written to ``path`` at the end of the run (None if it can): a folder, a missing or
    unwritable parent folder, or one of the run's own files."""
    if path.is_dir():
        return f"{str(path)!r} is a directory; give a file path, e.g. {str(path / 'model.mmgraph')!r}"
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist; create it first, or give a path in an existing folder"
    if path.resolve() in {(out / name).resolve() for name in (*RUN_FILES, LOCK_FILE)}:
        return f"{str(path)!r} is one of the run's own files in --out; give another path"
    problem = _writable_folder(path.parent)
    return f"cannot write to {path.parent} ({problem})" if problem else None


def _lock_out(out: Path) -> int | None:
    """Take ``out`` for this run: an exclusive ``fcntl.flock`` on ``out/run.lock``, which holds this process's id
    and host. The kernel releases the lock when the process ends, however it ends, so a lock file left by a killed
    run is simply taken over (no process ids to probe, none reused by another program); the file is removed by
    :func:`_unlock_out`. Returns the lock's file descriptor, or None where the file system cannot lock (a warning
    says the folder is unprotected).

    Raises:
        ValueError: another live process holds the lock (names the lock file and that process).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        logger.warning("--out: cannot lock %s on this system; do not start a second run into it", out)
        return None
    lock = out / LOCK_FILE
    while True:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode(errors="replace").split()
            os.close(descriptor)
            who = f"process {holder[0]} on {holder[1]}" if len(holder) == 2 else "a process that is starting"
            raise ValueError(f"--out: {str(out)!r} is in use by another run ({who}, lock file {lock}); wait for "
                             "it to finish or choose another --out") from None
        except OSError as error:  # e.g. ENOLCK on a network file system without locking
            os.close(descriptor)
            logger.warning("--out: cannot lock %s (%s); do not start a second run into it", lock, error.strerror)
            return None
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:  # else the run we waited for removed the file between our open and our lock: lock the new one
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode())
    return descriptor


def _unlock_out(out: Path, descriptor: int | None) -> None:
    """Remove ``out/run.lock`` while still holding it, then release it."""
    if descriptor is not None:
        (out / LOCK_FILE).unlink(missing_ok=True)
        os.close(descriptor)


def main(argv: list[str] | None = None, prog: str = "python -m mmgraph.train") -> dict[str, Any] | None:
    """Run the CLI (``prog``: the program name in help and errors; ``mmgraph train`` passes its own); returns what
    it writes to ``metrics.json`` (None on ranks other than 0 under torchrun).

    The run holds an exclusive lock on ``--out`` from start to end (``run.lock``): a second run into the same
    folder is refused (exit 2) naming the lock file and the process that holds it."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.explain < 0 or (args.explain and args.fusion != "gnn"):
        parser.error(f"--explain: expected N >= 0 with --fusion gnn, got {args.explain} with {args.fusion!r}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger("mmgraph").setLevel(logging.WARNING)
    started = time.perf_counter()
    name = args.dataset if args.data is None else args.data.stem
    out = args.out if args.out is not None else Path("runs") / f"{name}-{args.fusion}"
    if out.exists() and not out.is_dir():
        parser.error(f"--out: {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = _lock_out(out) if rank == 0 else None  # other torchrun ranks share rank 0's folder
    except (OSError, ValueError) as error:
        parser.error(str(error) if isinstance(error, ValueError) else
                     f"--out: cannot write to {str(out)!r} ({error.strerror or error})")
    try:
        return _run(parser, args, name, out, rank, started)
    finally:
        _abandon_distributed()  # an error under torchrun: release the process group before the interpreter exits
        _unlock_out(out, lock)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str, out: Path, rank: int,
         started: float) -> dict[str, Any] | None:
    """The locked part of :func:`main`: checks, data, model, training and (rank 0) the report."""
    from mmgraph.data import stratified_split
    from mmgraph.models import FusionModel

    _prepare_out(parser, args, out)
    gnn_options = {key: value for key in ("conv", "layers", "heads", "relations", "readout", "positional",
                                          "temporal_window", "edge_pruning", "gnn_dropout")
                   if (value := getattr(args, key)) is not None}
    if gnn_options.get("positional") == "none":
        gnn_options["positional"] = None
    if gnn_options and args.fusion != "gnn":
        parser.error(f"--{'/--'.join(k.replace('_', '-') for k in gnn_options)}: GNN options need --fusion gnn, "
                     f"got --fusion {args.fusion}")
    if "gnn_dropout" in gnn_options:  # MultiModalGNN's ``dropout`` (the flag says whose: --modality-dropout is another)
        gnn_options["dropout"] = gnn_options.pop("gnn_dropout")
    try:
        dataset = (load_dataset(args.dataset, seed=args.seed, samples=args.samples,
                                data_dir=args.data_dir) if args.data is None
                   else load_npz(args.data, args.targets))
        parts = stratified_split(dataset, test_size=0.2, val_size=args.val_size, seed=args.seed)
        train, val, test = (dataset.subset(part) for part in parts)
        seed_everything(args.seed)
        # the statistics live in the model (buffers), so a --save-model file takes raw arrays at predict time
        model = FusionModel.from_dataset(train, args.fusion, dim=args.dim, modality_dropout=args.modality_dropout,
                                         unimodal_weight=args.unimodal_weight,
                                         fusion_kwargs=gnn_options, standardize=args.standardize,
                                         encoders=_encoder_choices(args.encoder))
        result = fit(model, train, val, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                     epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                     label_smoothing=args.label_smoothing, scheduler=args.scheduler, device=args.device,
                     seed=args.seed, checkpoint=out / "checkpoint.pt", resume=args.resume, log_dir=out,
                     progress=False if args.quiet else None)
    except (ValueError, TypeError) as error:  # bad data or options: one line, as argparse reports
        parser.error(str(error))
    except OSError as error:  # a full disk under the checkpoint: the message says what is left
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    try:
        report = (_report(args, name, out, model, result, (train, val, test), started, test_indices=parts[2])
                  if rank == 0 else None)
    except OSError as error:  # --save-model could not be written after all (metrics.json is)
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    _finish_distributed()
    return report


def _report(args: argparse.Namespace, name: str, out: Path, model: nn.Module, result: FitResult, parts: tuple,
            started: float, test_indices: torch.Tensor) -> dict[str, Any]:
    """Rank 0's end of the CLI: test metrics (each classification task's ``class_names`` beside its confusion
    matrix), ``metrics.json`` (with ``test_indices``, the rows of the data set scored, so the same split can be
    re-scored), ``--save-model`` (after it, so a model that cannot be written leaves the results behind) and the
    summary line."""
    train, val, test = parts
    test_metrics = evaluate(model, test, device=args.device)
    for task, metrics in test_metrics.items():
        if "confusion_matrix" in metrics:  # row i / column j of the matrix = class_names[i] / [j]
            metrics["class_names"] = model.class_names.get(task, [str(c) for c in range(model.tasks[task])])
    report = {
        "dataset": name, "fusion": args.fusion,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "best_val_score": result.best_score,
        "test": _jsonable(test_metrics), "test_indices": test_indices.tolist(), "fit_time_s": result.time_s,
        "total_time_s": time.perf_counter() - started,
    }
    if args.explain:
        report["explanations"] = [str(path) for path in _write_explanations(model, test, args.explain, out)]
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.save_model is not None:
        try:
            model.save(args.save_model)
        except OSError as error:  # its path was checked before training: a full disk, or a folder removed since
            raise OSError(error.errno, f"--save-model: could not write {args.save_model} ({error.strerror or error});"
                          f" the run's metrics.json, metrics.csv and checkpoint.pt (best weights under 'best_state')"
                          f" are in {out}") from error
    summary = ", ".join(
        f"{task} accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}" if "accuracy" in m
        else f"{task} mse {m['mse']:.4f} r2 {m['r2']:.4f}" for task, m in test_metrics.items())
    print(f"{name} / {args.fusion}: test {summary} (best epoch {result.best_epoch} of "
          f"{result.epochs_run}, {report['total_time_s']:.1f}s) -> {out}")
    return report


def _write_explanations(model: nn.Module, test, count: int, out: Path) -> list[Path]:
    """``explain_<i>.png`` for the first ``count`` test samples (fewer if the test set is smaller)."""
    from mmgraph.viz import plot_explanation, pyplot

    plt = pyplot()  # an ImportError naming `pip install "mmgraph[viz]"` when matplotlib is absent

    batch = test[torch.arange(min(count, len(test)))]
    model.cpu()
    explanation = model.explain(batch.inputs, batch.named_mask, batch.step_mask)
    paths = []
    for sample in range(len(batch)):
        figure = plot_explanation(explanation, sample=sample)
        paths.append(out / f"explain_{sample}.png")
        figure.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(figure)
    return paths


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
