"""The training settings in one place: :class:`TrainConfig`.

Every default of :func:`~mmgraph.training.fit` lives here once; ``fit``'s keyword defaults, the command line
(``mmgraph train``), the scikit-learn estimators and the fusion comparison read them from this class, so one edit
changes all of them. The values and why they were chosen:

* ``optimizer="adam"``, ``lr=1e-3``, ``batch_size=64``: what every entry point used already.
* ``weight_decay=1e-3``: chosen on a dev split by ``benchmarks/tune_budget.py`` (candidates 1e-4 and 1e-3, with
  encoder dropout 0 / 0.2 / 0.4; mean dev accuracy over concat, gnn, mfb and 5 seeds); it was 0 in ``fit``, 1e-4 in
  the CLI, 1e-3 in the estimators and the benchmark.
* ``label_smoothing=0.1``: the setting under which that weight decay was tuned and every published comparison ran.
* ``epochs=100``, ``patience=15``: the CLI's, the estimators' and the tuning run's (``fit`` had 50 and no early
  stopping); a comparison protocol sets its own shorter budget with :func:`dataclasses.replace`.
* ``monitor="accuracy"``, no scheduler, no gradient clipping, no class weights, ``amp="auto"``, ``seed=0``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmgraph.utils import check_choice as _check_choice
from mmgraph.utils import check_int as _check_int

__all__ = ["MONITORS", "OPTIMIZERS", "SCHEDULERS", "TASK_METRICS", "TrainConfig"]

OPTIMIZERS = ("adam", "adamw", "sgd")
MONITORS = ("accuracy", "macro_f1", "macro_recall", "mse", "loss")
TASK_METRICS = ("accuracy", "macro_f1", "macro_recall")
SCHEDULERS = (None, "cosine", "plateau")


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run (see :func:`~mmgraph.training.fit` for what each does).

    Attributes:
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        lr: learning rate (> 0). weight_decay: L2 penalty of the optimizer (>= 0). momentum: SGD only.
        epochs: maximum number of epochs. patience: epochs without improvement before stopping (None = never).
        batch_size: samples per step (per process under DDP).
        monitor: the validation metric that picks the best epoch (``"accuracy"``, ``"macro_f1"``,
            ``"macro_recall"``, ``"mse"``, ``"loss"`` or ``"<task>/<metric>"``).
        scheduler: None, ``"cosine"`` or ``"plateau"``.
        label_smoothing: in ``[0, 1)``, of the training cross-entropy. grad_clip: max gradient norm, or None.
        task_weights: ``{task: weight}`` of the summed loss (None = 1 each). aux_weight: weight of
            ``model.aux_loss``. class_weight: None, ``"balanced"`` or ``{task: [w_0, ..., w_{C-1}]}``.
        amp: mixed precision (True, False or ``"auto"`` = on for CUDA). seed: seeds torch and the shuffling.
        num_workers: DataLoader worker processes that gather the training batches (0 = in this process); the
            result does not depend on it. restore_best: load the best epoch's weights at the end.

    Example:
        >>> config = TrainConfig(epochs=20, lr=3e-4)
        >>> dataclasses.replace(config, patience=5).patience
        5
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-3
    momentum: float = 0.9
    epochs: int = 100
    patience: int | None = 15
    batch_size: int = 64
    monitor: str = "accuracy"
    scheduler: str | None = None
    label_smoothing: float = 0.1
    grad_clip: float | None = None
    task_weights: Mapping[str, float] | None = None
    aux_weight: float = 1.0
    class_weight: str | Mapping[str, Sequence[float]] | None = None
    amp: bool | str = "auto"
    seed: int = 0
    num_workers: int = 0
    restore_best: bool = True

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        if not isinstance(self.monitor, str):
            raise ValueError(f"monitor: expected a metric name such as 'accuracy' or '<task>/<metric>', got "
                             f"{self.monitor!r}")
        if "/" not in self.monitor:
            _check_choice("monitor", self.monitor, MONITORS)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("num_workers", self.num_workers, 0)
        if self.patience is not None:
            _check_int("patience", self.patience, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed: expected an int, got {type(self.seed).__name__}")
        for arg in ("lr", "weight_decay", "momentum", "aux_weight"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (arg == "lr" and
                                                                                               value == 0):
                raise ValueError(f"{arg}: expected a {'positive' if arg == 'lr' else 'non-negative'} number, "
                                 f"got {value!r}")
        if isinstance(self.label_smoothing, bool) or not isinstance(self.label_smoothing, (int, float)) or not (
                0 <= self.label_smoothing < 1):
            raise ValueError(f"label_smoothing: expected a number in [0, 1), got {self.label_smoothing!r}")
        if self.grad_clip is not None and (isinstance(self.grad_clip, bool) or not isinstance(
                self.grad_clip, (int, float)) or self.grad_clip <= 0):
            raise ValueError(f"grad_clip: expected a positive number or None, got {self.grad_clip!r}")
        if self.amp != "auto" and not isinstance(self.amp, bool):
            raise ValueError(f"amp: expected True, False or 'auto', got {self.amp!r}")
        if not isinstance(self.restore_best, bool):
            raise TypeError(f"restore_best: expected a bool, got {self.restore_best!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for a logger's ``log_hyperparams`` or a JSON report)."""
        return dataclasses.asdict(self)


def resolve_config(config: TrainConfig | None, settings: Mapping[str, Any]) -> TrainConfig:
    """``config`` (default: ``TrainConfig()``) with the keyword ``settings`` of a :func:`fit` call applied.

    A keyword left at its default keeps ``config``'s value; a keyword that differs from the default while
    ``config`` is given is refused, so that a setting is never given twice with two values.
    """
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig or None, got {type(config).__name__}")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = {name: value for name, value in settings.items() if not _same(value, defaults[name])}
    if config is None:
        return TrainConfig(**changed)
    if changed:
        raise ValueError(f"config: {sorted(changed)} given both as keywords and through config=; set them in the "
                         f"TrainConfig (dataclasses.replace(config, {next(iter(changed))}=...))")
    return config


def _same(value: Any, default: Any) -> bool:
    """``value == default`` with ``True != 1`` (``amp=True`` is not the default ``"auto"``, ``1`` is not ``True``)."""
    return value is default or (value == default and isinstance(value, bool) == isinstance(default, bool))
