"""``mmgraph compare``: which fusion works best on your data (:func:`mmgraph.compare` on the command line).

    mmgraph compare --data mine.npz [--targets KEY ...] [--methods gnn concat tfn late] [--quick | --full] [--out DIR]
                    [--sentiment TARGET]
    mmgraph compare --dataset handwritten --methods gnn concat --seeds 0 1

``--data`` takes the ``.npz`` layout of ``mmgraph train --data``: one array per modality under its name, the
targets under ``label`` (or the keys named by ``--targets``; integer = classes, float = regression) and optional
boolean ``<modality>_mask`` arrays ``[N]`` (True = present). Prints the ranked table; ``--out`` also writes
``compare_fusion.md``, ``compare_fusion.json`` and the plots there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser(prog: str) -> argparse.ArgumentParser:
    from mmgraph.data import available_datasets

    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="FILE.npz", help="your data (the layout above)")
    source.add_argument("--dataset", metavar="NAME", help=f"a registered data set: {available_datasets()}")
    parser.add_argument("--targets", nargs="+", default=["label"], metavar="KEY",
                        help="target arrays of --data (default: label)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                        help="methods to compare (default: every fusion, plus unimodal baselines on two modalities)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the quick protocol (default): 1 seed, 25 epochs")
    mode.add_argument("--full", action="store_true", help="the full protocol: 5 seeds, 100 epochs")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 (quick), 0..4 (--full)")
    parser.add_argument("--epochs", type=int, default=None, help="override the protocol's epoch budget")
    parser.add_argument("--sentiment", nargs="+", default=None, metavar="TARGET",
                        help="regression targets scored as sentiment: Acc-2, Acc-7, F1, MAE, Corr")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="write the report and plots here")
    parser.add_argument("--no-plots", action="store_true", help="with --out: no PNG plots")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (results do not depend on it)")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder with the field's benchmark files (--dataset mosi, mosei, avmnist)")
    parser.add_argument("--device", default="auto")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "mmgraph compare") -> dict:
    """Run the command; returns the report (``Comparison.to_dict()``)."""
    from mmgraph.evaluation import compare
    from mmgraph.cli.train import load_npz

    parser = _parser(prog)
    args = parser.parse_args(argv)
    for flag, value in (("--epochs", args.epochs), ("--jobs", args.jobs)):
        if value is not None and value < 1:
            parser.error(f"{flag}: expected an int >= 1, got {value}")
    try:
        data = load_npz(args.data, args.targets) if args.data is not None else args.dataset
        result = compare(data, methods=args.methods, protocol="full" if args.full else "quick", seeds=args.seeds,
                         jobs=args.jobs, out=args.out, sentiment=args.sentiment, epochs=args.epochs,
                         data_dir=args.data_dir, device=args.device, plots=not args.no_plots,
                         command=" ".join([prog, *(argv if argv is not None else sys.argv[1:])]))
    except (ValueError, TypeError) as error:  # bad data or options: one line, as argparse reports
        parser.error(str(error))
    print(result.to_markdown())
    if args.out is not None:
        print(f"wrote {args.out / 'compare_fusion.md'}, {args.out / 'compare_fusion.json'} and "
              f"{len(result.meta['plots'])} plot(s)")
    return result.to_dict()
