"""What :func:`~mmgraph.training.fit` shows while it trains: per-epoch metrics in ``metrics.csv`` (and TensorBoard
when installed) and a progress bar over epochs."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any


class _MetricsLog:
    """Per-epoch metrics of rank 0: ``log_dir/metrics.csv`` (the whole history, rewritten each epoch, so that a
    resumed run's file is complete) and TensorBoard scalars when ``tensorboard`` is installed."""

    def __init__(self, log_dir: str | Path, start_epoch: int) -> None:
        self.path = Path(log_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra: pip install "mmgraph[log]"
            self.writer = None
        else:
            self.writer = SummaryWriter(str(self.path.parent), purge_step=start_epoch + 1)

    def write(self, history: list[dict[str, float]]) -> None:
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        if self.writer is not None:
            record = history[-1]
            for key, value in record.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, int(record["epoch"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress_bar(total: int, initial: int, show: bool):
    if show:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="epoch", file=sys.stderr)
    return _NoBar()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
