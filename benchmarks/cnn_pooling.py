"""Inference speed of the CNN encoders' max pooling: ``MaxPool2x2`` against the ``nn.MaxPool2d(2)`` it replaced.

    python benchmarks/cnn_pooling.py [--rounds 7 --seconds 2 --threads 1] [--no-avdigits]

Two tables, each timed in interleaved rounds in one process by ``throughput.py``'s ``time_interleaved`` (warm-up,
then per round the median step time of each pooling; the ratio is the median of per-round ratios, so a machine whose
speed drifts slows both alike):

1. the encoders alone (``spatial_cnn`` on 28 x 28 images and on 112 x 112 spectrograms with ``stem=4``, ``cnn`` on
   28 x 28): one training step (forward + backward, B = 64) and one prediction (``torch.no_grad``, B = 512);
2. what users run: ``mmgraph.training.predict`` of an untrained av-digits model (``late`` and ``gnn``, the
   comparison's encoders) on the 640 test samples, both poolings swapped into the same model; the outputs are
   checked to be identical. Needs av-digits (``pip install mmgraph[data]``); ``--no-avdigits`` skips it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput.py, beside this script

from throughput import time_interleaved  # noqa: E402

from mmgraph.encoders import build_encoder  # noqa: E402
from mmgraph.encoders.cnn import MaxPool2x2  # noqa: E402

CPU = torch.device("cpu")


def swap_pooling(module: nn.Module, make) -> nn.Module:
    """Replace every 2x2 max pooling in ``module`` (either kind) by ``make()``, in place."""
    for name, child in module.named_children():
        if isinstance(child, (MaxPool2x2, nn.MaxPool2d)):
            setattr(module, name, make())
        else:
            swap_pooling(child, make)
    return module


POOLINGS = {"nn.MaxPool2d": lambda: nn.MaxPool2d(2), "MaxPool2x2": MaxPool2x2}


def _row(label: str, times: dict) -> str:
    old, new = times["nn.MaxPool2d"], times["MaxPool2x2"]
    ratios = [a / b for a, b in zip(old, new)]
    return (f"| {label} | {1e3 * statistics.median(old):.1f} | {1e3 * statistics.median(new):.1f} | "
            f"{statistics.median(ratios):.2f}x [{min(ratios):.2f} - {max(ratios):.2f}] |")


def encoders(rounds: int, seconds: float) -> None:
    cases = {"spatial_cnn 28 x 28": ({"image_size": (28, 28)}, (1, 28, 28)),
             "spatial_cnn 112 x 112, stem 4": ({"image_size": (112, 112), "stem": 4}, (1, 112, 112)),
             "cnn 28 x 28": ({}, (1, 28, 28))}
    print("| encoder, step | nn.MaxPool2d ms | MaxPool2x2 ms | speed-up [min - max] |")
    print("|---|---|---|---|")
    for label, (kwargs, shape) in cases.items():
        torch.manual_seed(0)
        encoder = build_encoder(label.split()[0], 64, **kwargs)
        train_x, eval_x = torch.randn(64, *shape), torch.randn(512, *shape)

        def train_step(make):
            swap_pooling(encoder, make)
            encoder(train_x).sum().backward()

        def predict_step(make):
            swap_pooling(encoder, make)
            with torch.no_grad():
                encoder(eval_x)

        for step, name in ((train_step, "training step, B = 64"), (predict_step, "prediction, B = 512")):
            times = time_interleaved({p: (lambda make=make: step(make)) for p, make in POOLINGS.items()}, rounds,
                                     seconds, CPU)
            print(_row(f"{label}, {name}", times))


def avdigits(rounds: int, seconds: float) -> None:
    from mmgraph.data import load_dataset_with_split
    from mmgraph.evaluation.methods import has_sequences, resolve_method
    from mmgraph.evaluation.runner import audio_visual_encoders
    from mmgraph.models import FusionModel
    from mmgraph.training import predict

    data, published = load_dataset_with_split("av-digits", seed=0)
    test = data.subset(published[2])
    print(f"\n| av-digits model, predict on {len(test)} test samples | nn.MaxPool2d ms | MaxPool2x2 ms | "
          "speed-up [min - max] |")
    print("|---|---|---|---|")
    for method in ("late", "gnn"):
        spec = resolve_method(method, has_sequences(data))
        torch.manual_seed(0)
        model = FusionModel(audio_visual_encoders(data, spec.frames, 64, 0.4), spec.fusion, data.tasks, dim=64,
                            fusion_kwargs=dict(spec.fusion_kwargs)).eval()
        outputs = {}

        def run(label, make):
            swap_pooling(model, make)
            outputs[label] = predict(model, test, batch_size=512, logits=True)

        times = time_interleaved({p: (lambda p=p, make=make: run(p, make)) for p, make in POOLINGS.items()},
                                 rounds, seconds, CPU)
        same = all(torch.equal(outputs["nn.MaxPool2d"][task], outputs["MaxPool2x2"][task]) for task in data.tasks)
        if not same:
            raise AssertionError(f"{method}: MaxPool2x2 changed the model's outputs")
        print(_row(f"{method} (outputs identical)", times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per case and pooling, all rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-avdigits", dest="avdigits", action="store_false")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} interleaved rounds")
    encoders(args.rounds, args.seconds)
    if args.avdigits:
        avdigits(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
