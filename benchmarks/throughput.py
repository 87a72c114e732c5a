"""Training-step throughput of the graph fusion paths, measured in one run.

    python benchmarks/throughput.py [--batch-size 256 --modalities 6 --dim 64 --threads 2 --device auto]
    python benchmarks/throughput.py --modalities 2 6 16 32          # one table per M, then a summary
    python benchmarks/throughput.py --sequences [--steps 4 16 64 128 --seq-batch 64 --unaligned 50 375 500]

Complete graphs (default mode):

One training step = forward + backward + Adam step on a 10-class cross-entropy, samples per second, for:

  (a) MultiModalGNN, default backend ("auto", which takes the dense path on these small complete graphs);
  (b) MultiModalGNN, pyg backend (same parameters; flattened batch, vectorised edge_index, PyG HeteroConv);
  (c) the way a plain-PyG user writes it: one HeteroData per sample (built once, like a Dataset), collated by
      Batch.from_data_list every step, HeteroConv of GATConv per (src, dst) modality pair, attentional readout;
  (d) concatenation + MLP of the same width.

All GNNs: 2 GAT layers, hidden = dim, 4 heads, complete graph, attention readout. The methods are timed in
interleaved rounds (--rounds) and each ratio is the median of its per-round ratios, so that a machine whose speed
drifts (shared cores) slows every method alike. Also reports forward+backward FLOPs per sample
(torch.utils.flop_counter) so the dense GNN's cost relative to concat+MLP can be read against the ratio of their
arithmetic.

Temporal graphs (--sequences): 3 sequence modalities of T steps each (every step a node, N = 3T), temporal window 2
plus time-aligned cross-modal edges, B = --seq-batch, 2 GAT layers, hidden 64, 4 heads; then one unaligned case
(--unaligned lengths, B = --unaligned-batch, cross-modal edges by relative time position). Backends: auto (the
default), dense (skipped above --dense-max-nodes: O(N²) memory), sparse, pyg, timed in interleaved rounds in one
process; --edge-pruning F adds the default backend with edge_pruning=F, --bound a step with free message passing
(each relation's projections only: the ceiling of any message passing's speed-up). Peak memory is measured
separately, one fresh subprocess per backend (its own peak RSS, VmHWM, after a few training steps, Python and torch
included), so that backends do not share one process's maximum.
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


SEQUENCE_BACKENDS = ("auto", "dense", "sparse", "pyg")


class SequenceClassifier(nn.Module):
    """MultiModalGNN over sequence modalities ``{name: [B, T_m, dim]}`` + a linear head."""

    def __init__(self, lengths: list[int], dim: int, backend: str, edge_pruning: float = 0.0) -> None:
        super().__init__()
        self.names = ["text", "audio", "vision", *[f"m{i}" for i in range(3, len(lengths))]][:len(lengths)]
        self.gnn = MultiModalGNN({n: dim for n in self.names}, hidden=dim, layers=2, conv="gat", heads=4,
                                 readout="attention", backend=backend, temporal_window=2, validate="shapes",
                                 edge_pruning=edge_pruning)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.gnn(inputs))


def _sequence_case(lengths: list[int], batch: int, dim: int, backend: str, device: torch.device):
    """A seeded model, its inputs and labels, and its training step. ``backend`` may be ``"<backend>+pruned<F>"``:
    that backend with ``edge_pruning=F``."""
    torch.manual_seed(0)
    backend, _, pruning = backend.partition("+pruned")
    model = SequenceClassifier(lengths, dim, backend, float(pruning or 0.0)).to(device)
    inputs = {name: torch.randn(batch, t, dim, device=device) for name, t in zip(model.names, lengths)}
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    return model, make_step(model, lambda: inputs, labels)


def _projections_only(layer, h, layout, present, lists=None):
    """A stand-in for the messages of one layer that keeps only what every path computes whatever its message
    passing: each relation's GAT projections (features and attention scores, summed so that they enter the loss),
    with no gather, softmax or aggregation. A step with it bounds the speed-up any message passing can reach."""
    messages = torch.zeros_like(h)
    for conv in layer.convs():
        sources, scores = layer.gat_project(h, [conv])  # [N, B, 1, heads, C], [N, B, 1, heads, 2]
        messages = messages + sources.flatten(2) + scores.sum((2, 3, 4)).unsqueeze(-1)
    return messages, []


def _bound_case(lengths: list[int], batch: int, dim: int, device: torch.device):
    """The sparse path's training step with free message passing (:func:`_projections_only`)."""
    import mmgraph.gnn.model as gnn_model

    model, step = _sequence_case(lengths, batch, dim, "sparse", device)

    def bound() -> None:
        real, gnn_model.sparse_messages = gnn_model.sparse_messages, _projections_only
        try:
            step()
        finally:
            gnn_model.sparse_messages = real

    return model, bound


def _peak_rss_mib() -> float:
    """This process's own peak resident memory in MiB: ``VmHWM`` of /proc/self/status (the high-water mark of this
    address space; ``ru_maxrss`` would include the parent's peak, inherited across fork and exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_memory_child(config: str) -> None:
    """Subprocess entry: a few training steps of one backend, then print its peak RSS (MiB) as JSON."""
    spec = json.loads(config)
    torch.set_num_threads(spec["threads"])
    device = resolve_device(spec["device"])
    before = _peak_rss_mib()
    model, step = _sequence_case(spec["lengths"], spec["batch"], spec["dim"], spec["backend"], device)
    for _ in range(3):
        step()
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(json.dumps({"peak_rss_mib": _peak_rss_mib(), "rss_before_model_mib": before, "cuda_peak_mib": cuda_peak,
                      "path": model.gnn.message_path(model.gnn.graph.layout(spec["lengths"], 2))}))


def _peak_memory(lengths: list[int], batch: int, dim: int, backend: str, args) -> dict:
    import subprocess

    config = json.dumps({"lengths": lengths, "batch": batch, "dim": dim, "backend": backend,
                         "threads": args.threads, "device": args.device})
    done = subprocess.run([sys.executable, __file__, "--peak-memory-child", config], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sequences(args) -> dict:
    """The temporal-graph tables (see the module docstring)."""
    device = resolve_device(args.device)
    cases = [([t] * 3, args.seq_batch) for t in args.steps] + ([(args.unaligned, args.unaligned_batch)]
                                                             if args.unaligned else [])
    report = {"config": {"dim": args.dim, "layers": 2, "conv": "gat", "heads": 4, "temporal_window": 2,
                         "threads": args.threads, "rounds": args.rounds, "device": str(device),
                         "torch": torch.__version__}, "cases": []}
    print(f"Temporal graphs: 3 modalities, window 2, 2 GAT layers, hidden {args.dim}, device={device}, "
          f"threads={args.threads}; ms per training step: median over {args.rounds} interleaved rounds [min - max]; "
          "speed-up vs pyg: median of per-round ratios [min - max]; peak RSS: one subprocess per backend")
    print("| T per modality (N) | B | backend (path) | ms/step | speed-up vs pyg | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for lengths, batch in cases:
        nodes = sum(lengths)
        backends = [b for b in SEQUENCE_BACKENDS if b != "dense" or nodes <= args.dense_max_nodes]
        backends += [f"auto+pruned{fraction}" for fraction in args.edge_pruning]
        steps, steps_paths = {}, {}
        for backend in backends:
            model, steps[backend] = _sequence_case(lengths, batch, args.dim, backend, device)
            steps_paths[backend] = model.gnn.message_path(model.gnn.graph.layout(lengths, 2))
        if args.bound:
            backends.append("bound")
            _, steps["bound"] = _bound_case(lengths, batch, args.dim, device)
            steps_paths["bound"] = "messages free"
        per_round = time_interleaved(steps, args.rounds, args.seconds * len(steps), device)
        case = {"lengths": lengths, "batch": batch, "nodes": nodes, "backends": {}}
        for backend in backends:
            memory = (_peak_memory(lengths, batch, args.dim, backend, args) if args.memory and backend != "bound"
                      else {"peak_rss_mib": float("nan"), "path": steps_paths[backend]})
            each = [p / t for t, p in zip(per_round[backend], per_round["pyg"])]
            row = {"ms_per_step": 1e3 * statistics.median(per_round[backend]),
                   "ms_per_step_range": [1e3 * min(per_round[backend]), 1e3 * max(per_round[backend])],
                   "speedup_vs_pyg": statistics.median(each), "speedup_vs_pyg_range": [min(each), max(each)],
                   **memory}
            case["backends"][backend] = row
            label = "/".join(map(str, lengths)) if len(set(lengths)) > 1 else str(lengths[0])
            print(f"| {label} ({nodes}) | {batch} | {backend} ({memory['path']}) | {row['ms_per_step']:.0f} "
                  f"[{row['ms_per_step_range'][0]:.0f} - {row['ms_per_step_range'][1]:.0f}] | "
                  f"{row['speedup_vs_pyg']:.2f}x [{min(each):.2f} - {max(each):.2f}] | {memory['peak_rss_mib']:.0f} |")
        report["cases"].append(case)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--modalities", type=int, nargs="+", default=[6])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per method, over all rounds")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (ratios: median over rounds)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--sequences", action="store_true", help="the temporal-graph tables instead")
    parser.add_argument("--steps", type=int, nargs="*", default=[4, 16, 64, 128],
                        help="T per modality of the aligned cases (none: skip)")
    parser.add_argument("--seq-batch", type=int, default=64)
    parser.add_argument("--unaligned", type=int, nargs="*", default=[50, 375, 500],
                        help="one unaligned case: T of each modality (none: skip)")
    parser.add_argument("--unaligned-batch", type=int, default=32)
    parser.add_argument("--edge-pruning", type=float, nargs="*", default=[],
                        help="--sequences: also time the default backend with these edge_pruning fractions")
    parser.add_argument("--bound", action="store_true",
                        help="--sequences: also time a step whose message passing is free (the projections only): "
                             "the largest speed-up over pyg that any message passing could reach")
    parser.add_argument("--dense-max-nodes", type=int, default=200,
                        help="skip the dense backend above this many nodes per sample (O(N²) memory)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="--sequences without the peak-memory subprocesses (timing only)")
    parser.add_argument("--peak-memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.peak_memory_child:
        return _peak_memory_child(args.peak_memory_child)
    torch.set_num_threads(args.threads)
    if args.sequences:
        return sequences(args)
    reports = {mods: complete_graph(args, mods) for mods in args.modalities}
    if len(reports) > 1:
        print("\n| M | auto vs plain per-sample PyG | auto vs pyg | concat+MLP vs auto |")
        print("|---|---|---|---|")
        for mods, report in reports.items():
            cells = [f"{report['ratios'][key]:.2f}x [{low:.2f} - {high:.2f}]" for key, (low, high)
                     in report["ratio_ranges_over_rounds"].items()]
            print(f"| {mods} | {cells[0]} | {cells[1]} | {cells[2]} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports[args.modalities[0]] if len(reports) == 1 else reports, indent=2))
    return reports


def complete_graph(args, mods: int) -> dict:
    """The complete-graph comparison for ``mods`` modalities (see the module docstring)."""
    torch.manual_seed(0)
    device = resolve_device(args.device)
    batch, dim = args.batch_size, args.dim
    nodes = torch.randn(batch, mods, dim, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    from torch_geometric.data import Batch

    plain = PlainPyG(mods, dim).to(device)
    data_list = plain.samples(nodes)
    models = {
        "auto": (GNNClassifier(mods, dim, "auto").to(device), lambda: nodes),
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

    speedups = {"auto_vs_plain_pyg": ratio("auto", "plain_pyg"), "auto_vs_pyg": ratio("auto", "pyg"),
                "concat_vs_auto_speed": ratio("concat_mlp", "auto")}
    ratios = {name: value[0] for name, value in speedups.items()}
    ratios["auto_vs_concat_flops"] = (results["auto"]["train_flops_per_sample"]
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

    gnn = models["auto"][0].gnn
    print(f"(auto = the default backend, here on the {gnn.message_path(gnn.graph.layout())} path)")
    print(show("auto vs plain per-sample PyG:", "auto_vs_plain_pyg"))
    print(show("auto vs pyg backend:", "auto_vs_pyg"))
    print(show("concat+MLP vs auto:", "concat_vs_auto_speed")
          + f", while the GNN does {ratios['auto_vs_concat_flops']:.1f}x the FLOPs of concat+MLP")
    return report


if __name__ == "__main__":
    main()
