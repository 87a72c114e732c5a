"""Choose the shared training budget of compare_fusion.py on a dev split nested inside the training part.

    python benchmarks/tune_budget.py [--methods concat gnn mfb] [--seeds 0 1 2 3 4] [--jobs 2]

For each candidate budget (encoder dropout, weight decay; every other setting from ``mmgraph.evaluation.Budget`` and
``mmgraph.training.TrainConfig``: label smoothing 0.1, encoder width 256, 100 epochs, patience 15), trains the given
methods on the handwritten splits of compare_fusion.py (the same seeds) and reports the mean dev accuracy. The dev split
is a stratified 20 % of each split's *training* part; the model trains on the other 80 % and early-stops on dev. Neither
the split's validation part nor its test part is used, so the budget is chosen without looking at what compare_fusion.py
selects on or reports. The budget with the best mean over methods and seeds is the one compare_fusion.py uses for every
method alike.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from concurrent.futures import ProcessPoolExecutor

CANDIDATES = [
    {"encoder_dropout": dropout, "weight_decay": decay} for dropout in (0.0, 0.2, 0.4) for decay in (1e-4, 1e-3)]


def dev_score(candidate: dict, method: str, seed: int, epochs: int | None) -> float:
    import torch

    from mmgraph.data import load_dataset, standardize, stratified_split
    from mmgraph.evaluation.methods import resolve_method
    from mmgraph.evaluation.protocol import Budget, splits
    from mmgraph.evaluation.runner import train_once
    from mmgraph.training import TrainConfig

    torch.set_num_threads(1)
    data = load_dataset("handwritten")
    train_idx, _, _ = splits(data, seed)[0]  # the validation and test indices are not used
    inner, dev, _ = stratified_split(data.labels()[train_idx], test_size=0.0, val_size=0.2, seed=seed)
    train, dev = standardize(data.subset(train_idx[inner]), data.subset(train_idx[dev]))
    train_config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    budget = Budget(train_config)  # the candidate overrides weight_decay and encoder_dropout
    _, info = train_once(train, dev, resolve_method(method), budget, candidate, seed, torch.device("cpu"), 0.0)
    return info["best_val"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["concat", "gnn", "mfb"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    grid = list(itertools.product(range(len(CANDIDATES)), args.methods, args.seeds))
    with ProcessPoolExecutor(args.jobs) as pool:
        scores = list(pool.map(dev_score, [CANDIDATES[c] for c, _, _ in grid], [m for _, m, _ in grid],
                               [s for _, _, s in grid], [args.epochs] * len(grid)))
    table = {}
    for (c, method, _), score in zip(grid, scores):
        table.setdefault(c, {}).setdefault(method, []).append(score)
    print("| budget | " + " | ".join(args.methods) + " | mean |")
    print("|---|" + "---|" * (len(args.methods) + 1))
    for c, per_method in table.items():
        means = {m: statistics.fmean(v) for m, v in per_method.items()}
        print(f"| {CANDIDATES[c]} | " + " | ".join(f"{100 * means[m]:.2f}" for m in args.methods)
              + f" | {100 * statistics.fmean(means.values()):.2f} |")
    best = max(table, key=lambda c: statistics.fmean(statistics.fmean(v) for v in table[c].values()))
    print(f"best on dev: {CANDIDATES[best]}")
    return CANDIDATES[best]


if __name__ == "__main__":
    main()
