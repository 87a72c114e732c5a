"""Where :func:`~mmgraph.training.fit` writes its per-epoch metrics: the :class:`Logger` protocol and the built-in
:class:`CSVLogger` and :class:`TensorBoardLogger`.

A logger is any object with ``log_metrics(metrics, step)`` and ``log_hyperparams(config)`` (and optionally
``close()``); MLflow, Weights & Biases and the like plug in with a few lines and no new dependency of mmgraph (see
docs/training.md). ``fit`` calls loggers on rank 0 only: ``log_hyperparams`` once before training, ``log_metrics``
after every epoch with the epoch's record and ``step`` = the 1-based epoch, ``close`` at the end.
``fit(..., log_dir=DIR)`` is shorthand for ``loggers=[CSVLogger(DIR), TensorBoardLogger(DIR)]`` (the latter only
when ``tensorboard`` is installed).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mmgraph.training.config import TrainConfig

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger", "default_loggers"]


@runtime_checkable
class Logger(Protocol):
    """Receives the training settings once and the metrics of every epoch."""

    def log_hyperparams(self, config: TrainConfig) -> None:
        """The run's settings (``config.to_dict()`` gives plain values)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One epoch's record (``epoch``, ``train_loss``, ``lr``, ``val_*``, ``score``, ``time_s``) at ``step`` =
        the 1-based epoch."""


class CSVLogger:
    """``log_dir/metrics.csv``: one row per epoch, the columns of the record (``epoch, train_loss, lr, val_loss,
    ..., score, time_s``). The whole file is rewritten atomically after every epoch; a run resumed at epoch ``k``
    keeps the earlier run's rows ``1 .. k`` (read back from the file), so the file always covers the whole history.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.path = Path(log_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows: list[Mapping[str, Any]] | None = None

    def log_hyperparams(self, config: TrainConfig) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._rows is None:  # first epoch of this run: keep the rows of the epochs before it
            self._rows = self._earlier_rows(step)
        self._rows.append(dict(metrics))
        temporary = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self._rows[-1]))
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(temporary, self.path)

    def _earlier_rows(self, step: int) -> list[Mapping[str, Any]]:
        if step <= 1 or not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            return [row for row in csv.DictReader(handle) if int(float(row["epoch"])) < step]

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard scalars in ``log_dir`` (one per record key but ``epoch``, at ``step`` = the epoch); needs the
    ``tensorboard`` package (``pip install "mmgraph[log]"``). Steps from ``step`` on are purged when a run resumes."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without tensorboard

        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self._writer = None

    def log_hyperparams(self, config: TrainConfig) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            self._writer = self._writer_class(str(self.log_dir), purge_step=step)
        for key, value in metrics.items():
            if key != "epoch":
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def default_loggers(log_dir: str | Path) -> list[Any]:
    """What ``fit(log_dir=...)`` writes: a :class:`CSVLogger` and, when tensorboard is installed, a
    :class:`TensorBoardLogger`."""
    loggers: list[Any] = [CSVLogger(log_dir)]
    try:
        loggers.append(TensorBoardLogger(log_dir))
    except ImportError:  # tensorboard is an optional extra
        pass
    return loggers
