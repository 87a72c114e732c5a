"""Training-step throughput of the graph fusion paths, measured in one run.

    python benchmarks/throughput.py [--batch-size 256 --modalities 6 --dim 64 --threads 2 --device auto]

One training step = forward + backward + Adam step on a 10-class cross-entropy, samples per second, for:

  (a) MultiModalGNN, dense backend (batched tensor maths on [B, N, H]);
  (b) MultiModalGNN, pyg backend (same parameters; flattened batch, vectorised edge_index, PyG HeteroConv);
  (c) the way a plain-PyG user writes it: one HeteroData per sample (built once, like a Dataset), collated by
      Batch.from_data_list every step, HeteroConv of GATConv per (src, dst) modality pair, attentional readout;
  (d) concatenation + MLP of the same width.

All GNNs: 2 GAT layers, hidden = dim, 4 heads, complete graph, attention readout. The methods are timed in
interleaved rounds (--rounds) and each ratio is the median of its per-round ratios, so that a machine whose speed
drifts (shared cores) slows every method alike. Also reports forward+backward FLOPs per sample (torch.utils.flop_counter) so the dense GNN's cost relative to concat+MLP can be read against the
ratio of their arithmetic.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgraph import MultiModalGNN  # noqa: E402
from mmgraph.utils import resolve_device  # noqa: E402

NUM_CLASSES = 10


class GNNClassifier(nn.Module):
    def __init__(self, modalities: int, dim: int, backend: str) -> None:
        super().__init__()
        self.names = [f"m{i}" for i in range(modalities)]
        self.gnn = MultiModalGNN({n: dim for n in self.names}, hidden=dim, layers=2, conv="gat", heads=4,
                                 readout="attention", backend=backend, validate="shapes")
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:  # nodes: [B, M, D]
        return self.head(self.gnn(nodes))


class ConcatMLP(nn.Module):
    def __init__(self, modalities: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(modalities * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:  # nodes: [B, M, D]
        return self.head(self.mlp(nodes.flatten(1)))


class PlainPyG(nn.Module):
    """What a PyG user would write: per-type projections, HeteroConv(GATConv) per modality pair, pooled readout."""

    def __init__(self, modalities: int, dim: int) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, HeteroConv
        from torch_geometric.nn.aggr import AttentionalAggregation

        self.names = [f"m{i}" for i in range(modalities)]
        self.edge_types = [(a, "to", b) for a in self.names for b in self.names]  # a == b: the self-loop type
        self.proj = nn.ModuleDict({n: nn.Linear(dim, dim) for n in self.names})
        self.convs = nn.ModuleList(
            HeteroConv({et: GATConv(dim, dim // 4, heads=4, add_self_loops=False) for et in self.edge_types},
                       aggr="sum") for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.readout = AttentionalAggregation(gate_nn=nn.Linear(dim, 1))
        self.head = nn.Linear(dim, NUM_CLASSES)

    def samples(self, nodes: torch.Tensor) -> list:
        """One HeteroData per sample: what a Dataset of graphs holds (built once, outside the timed loop)."""
        from torch_geometric.data import HeteroData

        data_list = []
        single = torch.zeros(2, 1, dtype=torch.long)
        for sample in nodes:
            data = HeteroData()
            for m, name in enumerate(self.names):
                data[name].x = sample[m:m + 1]
            for et in self.edge_types:
                data[et].edge_index = single
            data_list.append(data)
        return data_list

    def forward(self, batch) -> torch.Tensor:
        x = {n: self.proj[n](batch[n].x) for n in self.names}
        for conv, norm in zip(self.convs, self.norms):
            out = conv(x, {et: batch[et].edge_index for et in self.edge_types})
            x = {n: norm(x[n] + F.elu(out[n])) for n in self.names}
        nodes = torch.cat([x[n] for n in self.names])
        index = torch.cat([batch[n].batch for n in self.names])
        return self.head(self.readout(nodes, index, dim_size=batch.num_graphs))


def time_interleaved(steps: dict, rounds: int, seconds: float, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of every method, measured in ``rounds`` interleaved rounds.

    Each round runs every method in turn for about ``seconds / rounds`` (at least 2 steps) and keeps the median
    step time. Interleaving makes the ratios robust to a machine whose speed drifts (shared cores): a slow spell
    slows every method of that round, not only the one being timed.
    """
    for step in steps.values():
        for _ in range(3):
            step()  # warm-up
    _sync(device)
    per_round = {name: [] for name in steps}
    budget = seconds / rounds
    for _ in tqdm(range(rounds), desc="rounds", leave=False, disable=not sys.stderr.isatty()):
        for name, step in steps.items():
            times: list[float] = []
            deadline = time.perf_counter() + budget
            while len(times) < 2 or time.perf_counter() < deadline:
                start = time.perf_counter()
                step()
                _sync(device)
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times))
    return per_round


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model: nn.Module, batch_fn, labels: torch.Tensor):
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # same optimiser for all

    def step() -> None:
        loss = F.cross_entropy(model(batch_fn()), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def train_flops(model: nn.Module, inputs, labels: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(inputs), labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--modalities", type=int, default=6)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per method, over all rounds")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (ratios: median over rounds)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    batch, mods, dim = args.batch_size, args.modalities, args.dim
    nodes = torch.randn(batch, mods, dim, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    from torch_geometric.data import Batch

    plain = PlainPyG(mods, dim).to(device)
    data_list = plain.samples(nodes)
    models = {
        "dense": (GNNClassifier(mods, dim, "dense").to(device), lambda: nodes),
        "pyg": (GNNClassifier(mods, dim, "pyg").to(device), lambda: nodes),
        "plain_pyg": (plain, lambda: Batch.from_data_list(data_list)),
        "concat_mlp": (ConcatMLP(mods, dim).to(device), lambda: nodes),
    }
    steps = {name: make_step(model, batch_fn, labels) for name, (model, batch_fn) in models.items()}
    per_round = time_interleaved(steps, args.rounds, args.seconds * len(steps), device)
    results = {}
    for name, (model, batch_fn) in models.items():
        seconds = statistics.median(per_round[name])
        flops = train_flops(model, batch_fn(), labels) if name != "plain_pyg" else None
        results[name] = {
            "samples_per_s": batch / seconds,
            "ms_per_step": 1e3 * seconds,
            "ms_per_step_rounds": [1e3 * t for t in per_round[name]],
            "train_flops_per_sample": flops / batch if flops else None,
            "parameters": sum(p.numel() for p in model.parameters()),
        }

    def ratio(fast: str, slow: str) -> tuple[float, float, float]:
        """(median, min, max) over rounds of how many times faster ``fast`` ran than ``slow``."""
        each = [s / f for f, s in zip(per_round[fast], per_round[slow])]
        return statistics.median(each), min(each), max(each)

    speedups = {"dense_vs_plain_pyg": ratio("dense", "plain_pyg"), "dense_vs_pyg": ratio("dense", "pyg"),
                "concat_vs_dense_speed": ratio("concat_mlp", "dense")}
    ratios = {name: value[0] for name, value in speedups.items()}
    ratios["dense_vs_concat_flops"] = (results["dense"]["train_flops_per_sample"]
                                       / results["concat_mlp"]["train_flops_per_sample"])
    ratio_ranges = {name: [value[1], value[2]] for name, value in speedups.items()}
    report = {
        "config": {"batch_size": batch, "modalities": mods, "dim": dim, "layers": 2, "conv": "gat", "heads": 4,
                   "threads": args.threads, "rounds": args.rounds, "device": str(device), "torch": torch.__version__,
                   "python": platform.python_version(), "machine": platform.machine()},
        "results": results,
        "ratios": ratios,
        "ratio_ranges_over_rounds": ratio_ranges,
    }
    print(f"Training-step throughput: B={batch}, M={mods}, D={dim}, 2 GAT layers, device={device}, "
          f"threads={args.threads}")
    print(f"| {'method':<12} | {'samples/s':>10} | {'ms/step':>8} | {'train GFLOP/1k samples':>22} | {'params':>8} |")
    print(f"|{'-' * 14}|{'-' * 12}|{'-' * 10}|{'-' * 24}|{'-' * 10}|")
    for name, row in results.items():
        flops = f"{row['train_flops_per_sample'] * 1e3 / 1e9:.3f}" if row["train_flops_per_sample"] else "n/a"
        print(f"| {name:<12} | {row['samples_per_s']:>10.0f} | {row['ms_per_step']:>8.2f} | {flops:>22} | "
              f"{row['parameters']:>8} |")
    print(f"\nspeed ratios: median over {args.rounds} interleaved rounds [min - max]")

    def show(label: str, key: str) -> str:
        low, high = ratio_ranges[key]
        return f"{label:<31}{ratios[key]:.2f}x faster  [{low:.2f} - {high:.2f}]"

    print(show("dense vs plain per-sample PyG:", "dense_vs_plain_pyg"))
    print(show("dense vs pyg backend:", "dense_vs_pyg"))
    print(show("concat+MLP vs dense:", "concat_vs_dense_speed")
          + f", while the dense GNN does {ratios['dense_vs_concat_flops']:.1f}x the FLOPs of concat+MLP")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
