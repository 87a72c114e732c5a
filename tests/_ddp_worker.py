"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2``: fit a tiny model with DDP on gloo and
save this rank's final parameters to ``OUT/rank<r>.pt``."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mmgraph.data import MultiModalDataset
from mmgraph.model import FusionModel
from mmgraph.train import fit


def main(out: Path) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(240, 6, generator=gen), torch.randn(240, 4, generator=gen)
    label = ((a[:, 0] > 0) ^ (b[:, 0] > 0)).long()
    dataset = MultiModalDataset({"a": a, "b": b}, {"label": label})
    train, val = dataset.subset(torch.arange(180)), dataset.subset(torch.arange(180, 240))
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must start every rank from rank 0's
    model = FusionModel({"a": nn.Linear(6, 16), "b": nn.Linear(4, 16)}, "concat", {"label": 2}, dim=16,
                        head_hidden=16)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, train, val, epochs=3, batch_size=32, lr=1e-2, seed=0, device="cpu",
                 checkpoint=out / "checkpoint.pt", progress=False, restore_best=False)
    torch.save({"state": model.state_dict(), "initial": initial, "epochs_run": result.epochs_run,
                "history": result.history, "world_size": dist.get_world_size()}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    from mmgraph.training.distributed import _end_worker_process

    main(Path(sys.argv[1]))
    _end_worker_process()  # DDP processes can abort in interpreter teardown (see its docstring)
