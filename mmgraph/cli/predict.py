"""``mmgraph predict``: a saved model's predictions on new data, as CSV.

    mmgraph predict MODEL.mmgraph --data new.npz --out predictions.csv [--proba]

``MODEL.mmgraph`` is a file written by ``FusionModel.save`` (``mmgraph train --save-model``). ``new.npz`` holds one
array per modality of the model under its name (``[N, ...]``, raw: the model standardises with its training
statistics) and optional boolean ``<modality>_mask`` arrays ``[N]`` (True = present); other arrays (e.g. the
labels) are ignored. The CSV has a header and one row per sample: one column per task (the class name for a
classification task, the value for regression) and, with ``--proba``, one ``<task>:<class>`` column per class.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["main", "predictions_table"]


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, metavar="MODEL.mmgraph", help="a model file (FusionModel.save)")
    parser.add_argument("--data", type=Path, required=True, metavar="FILE.npz", help="the samples to predict")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.csv", help="where to write the CSV")
    parser.add_argument("--proba", action="store_true", help="also write class probabilities")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    return parser


def read_inputs(path: Path, modalities: Sequence[str]
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(arrays, masks, step_masks)`` of the model's ``modalities`` from a ``.npz`` (``<modality>_mask`` and
    ``<modality>_step_mask`` optional; a unicode string array is text), the layout ``mmgraph train --data`` reads."""
    from mmgraph.data.npz import open_npz

    stored = open_npz(path, arg="--data")
    missing = [m for m in modalities if m not in stored]
    if missing:
        raise ValueError(f"--data: {str(path)!r} lacks the model's modalities {missing}; the model reads "
                         f"{list(modalities)}, the file holds {sorted(stored)}")
    return ({m: stored[m] for m in modalities},
            {m: stored[f"{m}_mask"] for m in modalities if f"{m}_mask" in stored},
            {m: stored[f"{m}_step_mask"] for m in modalities if f"{m}_step_mask" in stored})


def predictions_table(model, probabilities: dict, proba: bool = False) -> tuple[list[str], list[list[str]]]:
    """``(header, columns)`` of the CSV from ``predict(model, ..., proba=True)``: per task the predicted class name
    (or the regression value), then with ``proba`` one ``<task>:<class>`` probability column per class."""
    header, columns = [], []
    for task, classes in model.tasks.items():
        values = probabilities[task].numpy()
        header.append(task)
        if not classes:
            columns.append([f"{v:.6g}" for v in values])
            continue
        names = model.class_names.get(task) or [str(c) for c in range(classes)]
        columns.append([names[i] for i in values.argmax(1)])
    for task, classes in model.tasks.items():
        names = model.class_names.get(task) or [str(c) for c in range(classes)]
        for c, name in enumerate(names if proba and classes else []):
            header.append(f"{task}:{name}")
            columns.append([f"{p:.6g}" for p in probabilities[task][:, c].tolist()])
    return header, columns


def main(argv: Sequence[str] | None = None, prog: str = "mmgraph predict") -> Path:
    """Run the command; returns the CSV's path."""
    from mmgraph.io import write_text
    from mmgraph.models import FusionModel
    from mmgraph.training import predict

    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size: expected an int >= 1, got {args.batch_size}")
    if not args.model.is_file():
        parser.error(f"MODEL.mmgraph: no such file {str(args.model)!r}")
    try:
        model = FusionModel.load(args.model)
        arrays, masks, step_masks = read_inputs(args.data, model.modalities)
        probabilities = predict(model, arrays, batch_size=args.batch_size, device=args.device, proba=True,
                                mask=masks or None, step_mask=step_masks or None)
    except (ValueError, TypeError) as error:  # a corrupt model file, bad data: one line, as argparse reports
        parser.error(str(error))
    header, columns = predictions_table(model, probabilities, args.proba)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*columns))
    write_text(args.out, buffer.getvalue())
    print(f"wrote {len(columns[0]) if columns else 0} prediction(s) of {list(model.tasks)} to {args.out}")
    return args.out
