"""Compare every fusion method under one budget: same encoders, heads, optimiser, epochs, early stopping and seeds.

    python benchmarks/compare_fusion.py --quick            # < 5 min on 2 CPU cores: every method, 1 split
    python benchmarks/compare_fusion.py --full             # the complete protocol (docs/benchmarks.md)
    python benchmarks/compare_fusion.py --datasets handwritten --methods gnn concat --seeds 0 1 --epochs 20
    python benchmarks/compare_fusion.py --full --datasets av-digits --data-dir ~/data   # + mosi/mosei/avmnist files

Only the fusion differs between methods. Output goes to results/ for --full and results/quick/ otherwise. Hyper-parameters (a small grid in --full) are chosen per split on the
validation part of the training data; the test split is evaluated once per run. Writes `<out>/compare_fusion.md`,
`<out>/compare_fusion.json` (every raw figure, library versions, device, seeds, command line) and PNG plots.
The protocol is library code (mmgraph.evaluation, behind mmgraph.compare); this script is its published command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from mmgraph.data.registry import DATA_DIR_FILES, available_datasets
from mmgraph.evaluation import compare, make_protocol

DATASETS = make_protocol("full").datasets


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fast protocol (default): 1 split, short budget")
    mode.add_argument("--full", action="store_true", help="complete protocol: 5 splits, grid, robustness variants")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help=f"registered data sets (default: {list(DATASETS)}; also sentiment, your own "
                             f"register_dataset names, and the --data-dir files {list(DATA_DIR_FILES)})")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME", help="fusion names (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--modality-dropout", type=float, default=0.5,
                        help="rate for the variant trained with modality dropout")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/ for --full, results/quick/ otherwise, so a quick run "
                             "never overwrites the committed full results)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes (CPU only); each run is seeded, so results do not depend on it")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per process (default: 1 with --jobs > 1, else torch's choice)")
    parser.add_argument("--grid", action="store_true",
                        help="also select head dropout in {0, 0.3} per method and split on validation accuracy")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--update", action="store_true",
                        help="re-run only the given --datasets/--methods and replace their runs in the existing "
                             "<out>/compare_fusion.json (same protocol and seeds), keeping every other run; the "
                             "tables and plots are rebuilt from the merged runs and the command is recorded")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder with the field's benchmark files: adds " + ", ".join(
                            f"{name} ({path})" for name, path in DATA_DIR_FILES.items()) +
                        " for those present (docs/data.md)")
    return parser, parser.parse_args(argv)


def datasets_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The data sets to run: --datasets (default: the protocol's), plus the --data-dir files that are present."""
    datasets = list(args.datasets or make_protocol("full" if args.full else "quick").datasets)
    unknown = [name for name in datasets if name not in available_datasets()]
    if unknown:
        parser.error(f"--datasets: unknown data set {unknown[0]!r}; expected some of {available_datasets()}")
    needs_files = [name for name in datasets if name in DATA_DIR_FILES]
    if needs_files and args.data_dir is None:
        parser.error(f"--datasets: {needs_files} need --data-dir")
    datasets = [name for name in datasets if name not in DATA_DIR_FILES]
    for name, file in DATA_DIR_FILES.items() if args.data_dir is not None else ():
        if args.datasets and name not in args.datasets:
            continue
        if (args.data_dir / file).exists():
            datasets.append(name)
        else:
            print(f"note: {name} skipped: {args.data_dir / file} not found (docs/data.md)", file=sys.stderr)
    return datasets


def main(argv: Sequence[str] | None = None) -> dict:
    parser, args = parse_args(argv)
    if args.threads and args.jobs <= 1:
        torch.set_num_threads(args.threads)
    out = args.out or Path("results" if args.full else "results/quick")
    if args.update and not (out / "compare_fusion.json").exists():
        parser.error(f"--update: {out / 'compare_fusion.json'} not found; run without --update first")
    start = time.perf_counter()
    try:
        result = compare(datasets_of(parser, args), methods=args.methods, protocol="full" if args.full else "quick",
                         seeds=args.seeds, jobs=args.jobs, out=out, epochs=args.epochs, grid=args.grid,
                         modality_dropout=args.modality_dropout, data_dir=args.data_dir, device=args.device,
                         threads=args.threads, plots=not args.no_plots, update=args.update,
                         command="python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    print(result.to_markdown())
    print(f"wrote {out / 'compare_fusion.md'}, {out / 'compare_fusion.json'} and {len(result.meta['plots'])} plot(s)"
          f" in {time.perf_counter() - start:.0f}s")
    return result.to_dict()


if __name__ == "__main__":
    main()
