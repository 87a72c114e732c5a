"""Test accuracy of a few fusions under the shared budget, over split seeds *and* model-initialisation seeds.

    python benchmarks/init_seeds.py [--dataset handwritten] [--methods concat gnn sum cross_attention]
                                    [--seeds 0 1 2 3 4] [--init-offsets 0 100] [--jobs 2]

compare_fusion.py seeds the split and the model with the same number, so its spread mixes both. Here each split
seed ``s`` trains every method from the initial weights of seed ``s + offset`` for each offset, with exactly the
budget, split, standardisation and selection of compare_fusion.py (early stopping on the split's validation part);
the test part is evaluated once per trained model. Prints mean ± std (over all split × init runs) and per offset.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
from concurrent.futures import ProcessPoolExecutor


def run_accuracy(dataset: str, method: str, seed: int, init_seed: int, epochs: int | None,
                 patience: int | None) -> float:
    """Mean test accuracy of ``method`` over the splits of ``seed``, trained from ``init_seed`` with the ``full``
    protocol's budget as compare_fusion.py applies it to ``dataset`` (``epochs``/``patience`` override it)."""
    import torch

    from mmgraph.data import load_dataset_with_split, standardize
    from mmgraph.evaluation.methods import has_sequences, resolve_method
    from mmgraph.evaluation.protocol import make_protocol, splits
    from mmgraph.evaluation.runner import budget_for, score, train_once

    torch.set_num_threads(1)
    data, published = load_dataset_with_split(dataset, seed=seed)  # the seed reaches the synthetic sets only
    protocol = make_protocol("full", epochs=epochs)
    budget = budget_for(data, protocol.budget)  # image + spectrogram data: the comparison's (epochs, patience)
    if patience is not None:
        budget = dataclasses.replace(budget, train=dataclasses.replace(budget.train, patience=patience))
    accuracies = []
    for train_idx, val_idx, test_idx in splits(data, seed, protocol.preset(dataset).folds, published):
        train, val, test = standardize(data.subset(train_idx), data.subset(val_idx), data.subset(test_idx))
        model, _ = train_once(train, val, resolve_method(method, has_sequences(data)), budget, {}, init_seed,
                              torch.device("cpu"), 0.0)
        accuracies.append(score(model, test, torch.device("cpu")))
    return statistics.fmean(accuracies)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="handwritten")
    parser.add_argument("--methods", nargs="+", default=["concat", "gnn", "sum", "cross_attention"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--init-offsets", nargs="+", type=int, default=[0, 100])
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: compare_fusion.py --full's for the data set (image + audio data: 40)")
    parser.add_argument("--patience", type=int, default=None,
                        help="default: compare_fusion.py --full's for the data set (image + audio data: 8)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    grid = list(itertools.product(args.methods, args.seeds, args.init_offsets))
    with ProcessPoolExecutor(args.jobs) as pool:
        scores = list(pool.map(run_accuracy, *zip(*[(args.dataset, m, s, s + o, args.epochs, args.patience)
                                                     for m, s, o in grid])))
    results = {}
    for (method, _, offset), score in zip(grid, scores):
        results.setdefault(method, {}).setdefault(offset, []).append(score)
    print(f"{args.dataset}: test accuracy (%), mean ± std; split seeds {args.seeds}, init seed = split seed + offset")
    print("| method | all runs | " + " | ".join(f"offset {o}" for o in args.init_offsets) + " |")
    print("|---|---|" + "---|" * len(args.init_offsets))
    for method, by_offset in results.items():
        every = [v for values in by_offset.values() for v in values]
        cells = [_pm(every)] + [_pm(by_offset[o]) for o in args.init_offsets]
        print(f"| {method} | " + " | ".join(cells) + " |")
    return results


def _pm(values: list[float]) -> str:
    from mmgraph.metrics import mean_std

    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


if __name__ == "__main__":
    main()
