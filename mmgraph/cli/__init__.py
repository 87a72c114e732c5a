"""The ``mmgraph`` command (also ``python -m mmgraph``): one entry point, one module per subcommand.

    mmgraph train   --dataset handwritten --epochs 2          # python -m mmgraph.train, the same arguments
    mmgraph compare --data mine.npz [--methods gnn concat] [--full] [--out DIR] [--sentiment TARGET]
    mmgraph predict MODEL.mmgraph --data new.npz --out predictions.csv [--proba]

Each subcommand's ``--help`` lists its options; a bad argument is a one-line usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

# subcommand -> (module with main(argv), one-line description)
COMMANDS = {
    "train": ("mmgraph.cli.train", "train a FusionModel on a registered data set or your .npz (= python -m "
                                   "mmgraph.train)"),
    "compare": ("mmgraph.cli.compare", "compare fusion methods on a registered data set or your .npz"),
    "predict": ("mmgraph.cli.predict", "predict with a saved model (.mmgraph) on a .npz, write a CSV"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmgraph", description="Graph-based multimodal fusion: train, compare fusions, predict.",
        epilog="Run `mmgraph COMMAND --help` for a command's options.")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND",
                        help="; ".join(f"{name}: {text}" for name, (_, text) in COMMANDS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mmgraph COMMAND ARGS...``; returns the exit status (0), usage errors exit with 2."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    module = importlib.import_module(COMMANDS[args.command][0])
    module.main(args.args, prog=f"mmgraph {args.command}")
    if args.command == "train":  # a finished torchrun worker exits now (see _end_worker_process); else a no-op
        from mmgraph.training.distributed import _end_worker_process

        _end_worker_process()
    return 0
