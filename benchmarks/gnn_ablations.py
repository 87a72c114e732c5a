"""Validation accuracy of MultiModalGNN variants under compare_fusion.py's budget: ablations chosen on validation only.

    python benchmarks/gnn_ablations.py --dataset synthetic-temporal --seeds 0 1 2 \\
        --variant base '{}' --variant sin '{"positional": "sinusoidal"}' [--full] [--init-offsets 0 100]

Each variant is the comparison's ``gnn`` for the data set (:func:`mmgraph.evaluation.methods.resolve_method`: its
GNN_KWARGS, plus ``temporal_window=TEMPORAL_WINDOW`` (4) on sequence data) updated with the variant's JSON kwargs;
``{"method": "concat"}`` runs another of the comparison's methods instead, as a reference. Per split seed ``s`` (the
data set's own split and, for the synthetic sets, its data seed) and init seed ``s + offset``, the model is trained
with the comparison's ``train_once`` (same encoders, budget, standardisation, early stopping on the validation
part) and the best validation accuracy is recorded (on regression data: minus the validation loss, and the
validation MAE and R² of the restored model). The test part of the split is never evaluated. ``--full`` uses
the ``full`` protocol's budget (100 epochs, patience 15; image + audio 40, 8), else the quick one.

``--curves`` trains every run for the budget's epochs with early stopping off and also prints its validation
curve, one ``epoch:train loss/validation loss/validation score`` entry per epoch (docs/design.md, "Fifth round":
``--full --dataset av-digits --seeds 0 --init-offsets 2 4 --curves --variant gnn '{}'`` shows where the budget's
patience of 8 stops two of the committed runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def validation_accuracy(dataset: str, kwargs: dict, seed: int, init_seed: int, full: bool,
                        curves: bool = False) -> dict:
    """``{"val": best validation score (%: accuracy, or minus the loss on regression data), "mae", "r2" (regression
    tasks only)}``, each the mean over the seed's splits, of the GNN with ``kwargs`` on ``dataset``; with
    ``curves`` (early stopping off) also ``"curves"``: per split, ``[(epoch, train loss, validation loss,
    validation score), ...]``."""
    import dataclasses

    import torch

    from mmgraph.data import standardize
    from mmgraph.data.registry import load_dataset_with_split
    from mmgraph.evaluation.methods import has_sequences, resolve_method
    from mmgraph.evaluation.protocol import make_protocol, splits
    from mmgraph.evaluation.runner import budget_for, outputs, train_once
    from mmgraph.evaluation.scores import task_scores

    protocol = make_protocol("full" if full else "quick")
    data, published = load_dataset_with_split(dataset, seed=seed, samples=None, data_dir=None)
    kwargs = dict(kwargs)
    # a reference: another of the comparison's methods, as it runs it
    method = resolve_method(kwargs.pop("method", "gnn"), has_sequences(data))
    method = dataclasses.replace(method, fusion_kwargs={**method.fusion_kwargs, **kwargs})
    budget = budget_for(data, protocol.budget)  # image + audio data: the CNN epochs, as the comparison
    if curves:
        budget = dataclasses.replace(budget, train=dataclasses.replace(budget.train, patience=None))
    scores, regression = [], [t for t, classes in data.tasks.items() if not classes]
    history = []
    folds = protocol.preset(dataset).folds
    for train_idx, val_idx, _ in splits(data, seed, folds, published):  # the test indices are not touched
        train, val = standardize(data.subset(train_idx), data.subset(val_idx))
        model, info = train_once(train, val, method, budget, {}, init_seed, torch.device("cpu"), 0.0)
        figures = {"val": 100.0 * info["best_val"]}
        history.append([(h["epoch"], h["train_loss"], h.get("val_loss", float("nan")), h["score"])
                        for h in info["history"]])
        if regression:  # the library's scores of the restored best model on the validation part
            per_task = task_scores(val, outputs(model, val, torch.device("cpu")), set())
            figures.update({key: statistics.fmean(per_task[t][key] for t in regression) for key in ("mae", "r2")})
        scores.append(figures)
    return {**{key: statistics.fmean(f[key] for f in scores) for key in scores[0]},
            **({"curves": history} if curves else {})}


def main(argv=None) -> dict:
    import torch

    from mmgraph.metrics import mean_std

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic-temporal")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                        help="a name and the MultiModalGNN kwargs (JSON) that update the benchmark's GNN")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--init-offsets", nargs="+", type=int, default=[0])
    parser.add_argument("--full", action="store_true", help="compare_fusion.py --full's budget")
    parser.add_argument("--out", type=Path, default=None, help="append the results as JSON lines to this file")
    parser.add_argument("--curves", action="store_true",
                        help="early stopping off: print each run's per-epoch validation curve")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for name, spec in args.variant:
        kwargs = json.loads(spec)
        start = time.perf_counter()
        runs = [validation_accuracy(args.dataset, kwargs, s, s + o, args.full, args.curves)
                for s in args.seeds for o in args.init_offsets]
        scores = [run["val"] for run in runs]
        mean, std = mean_std(scores)
        results[name] = {"kwargs": kwargs, "val_accuracy": scores, "mean": mean, "std": std,
                         "seconds": time.perf_counter() - start}
        extra = ""
        for key in ("mae", "r2"):
            if key in runs[0]:
                values = [run[key] for run in runs]
                results[name][f"val_{key}"] = values
                extra += f" {key} {statistics.fmean(values):.3f} ({' '.join(f'{v:.3f}' for v in values)})"
        print(f"{args.dataset} {name:>24}: val {results[name]['mean']:6.2f} ± {results[name]['std']:5.2f} "
              f"({' '.join(f'{s:.2f}' for s in scores)}){extra} {results[name]['seconds']:.0f}s {kwargs}", flush=True)
        if args.curves:
            results[name]["curves"] = [run["curves"] for run in runs]
            for (seed, offset), run in zip([(s, o) for s in args.seeds for o in args.init_offsets], runs):
                for split, curve in enumerate(run["curves"]):
                    print(f"  seed {seed}, init seed {seed + offset}, split {split}: " + " ".join(
                        f"{epoch}:{train:.3f}/{val:.3f}/{score:.3f}" for epoch, train, val, score in curve),
                        flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps({"dataset": args.dataset, "name": name, "seeds": args.seeds,
                                    "init_offsets": args.init_offsets, "full": args.full, **results[name]}) + "\n")
    return results


if __name__ == "__main__":
    main()
