"""The Bayes-optimal accuracy of synthetic-temporal on the comparison's splits: the ceiling of every fusion there.

    python benchmarks/bayes_ceiling.py [--seeds 0 1 2 3 4] [--results results/compare_fusion.json] [--json OUT]

synthetic-temporal is generated, so the most accurate classifier of its inputs is known exactly:
:func:`mmgraph.data.synthetic.temporal_posterior` (the generator's event patterns are read from the same draws; a
model has to learn them). For each split seed (the data set's own seed and split, as compare_fusion.py draws them)
this prints that classifier's validation and test accuracy, then every method of a comparison report (``--results``,
default the committed one) beside it: its test accuracy over the same seeds and the distance to the ceiling, paired
per seed. Nothing is trained; it takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "synthetic-temporal"


def ceiling(seeds: list[int]) -> dict[int, dict[str, float]]:
    """``{seed: {"val": %, "test": %}}``: the Bayes classifier's accuracy on each part of the comparison's split."""
    import torch

    from mmgraph.data.registry import SYNTHETIC_TEMPORAL, load_dataset_with_split
    from mmgraph.data.synthetic import temporal_posterior
    from mmgraph.evaluation.protocol import make_protocol, splits

    folds = make_protocol("full").preset(DATASET).folds
    out = {}
    for seed in seeds:
        data, published = load_dataset_with_split(DATASET, seed=seed)
        labels = data.labels()
        correct = ((temporal_posterior(**SYNTHETIC_TEMPORAL, seed=seed) > 0.5).long() == labels).double()
        parts = {"val": [], "test": []}
        for _, val_idx, test_idx in splits(data, seed, folds, published):
            parts["val"].append(100 * float(correct[torch.as_tensor(val_idx)].mean()))
            parts["test"].append(100 * float(correct[torch.as_tensor(test_idx)].mean()))
        out[seed] = {part: statistics.fmean(values) for part, values in parts.items()}
    return out


def _mean_std(values: list[float]) -> str:
    from mmgraph.metrics import mean_std

    return "{:.2f} ± {:.2f}".format(*mean_std(values))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "compare_fusion.json",
                        help="a compare_fusion.py report whose synthetic-temporal runs are set beside the ceiling "
                             "(skipped when the file does not exist)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    bayes = ceiling(args.seeds)
    print(f"{DATASET}: the Bayes-optimal classifier (mmgraph.data.synthetic.temporal_posterior), split seeds "
          f"{args.seeds}")
    for seed, parts in bayes.items():
        print(f"  seed {seed}: validation {parts['val']:.2f}, test {parts['test']:.2f}")
    tests = [parts["test"] for parts in bayes.values()]
    print(f"  mean: validation {_mean_std([p['val'] for p in bayes.values()])}, test {_mean_std(tests)}")
    report = {"seeds": args.seeds, "bayes": bayes, "methods": {}}
    if args.results.exists():
        runs = [r for r in json.loads(args.results.read_text())["runs"]
                if r["dataset"] == DATASET and r["seed"] in bayes and r.get("modality_dropout", 0.0) == 0.0]
        print(f"\n| method ({args.results.name}) | test accuracy | below the ceiling (paired) | runs |")
        print("|---|---|---|---|")
        methods = {}
        for method in dict.fromkeys(r["method"] for r in runs):
            mine = [r for r in runs if r["method"] == method]
            accuracy = [100 * r["accuracy"] for r in mine]
            gap = [bayes[r["seed"]]["test"] - 100 * r["accuracy"] for r in mine]
            methods[method] = {"accuracy": accuracy, "gap": gap}
        for method, figures in sorted(methods.items(), key=lambda kv: statistics.fmean(kv[1]["gap"])):
            print(f"| {method} | {_mean_std(figures['accuracy'])} | {_mean_std(figures['gap'])} | "
                  f"{len(figures['gap'])} |")
        report["methods"] = methods
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
