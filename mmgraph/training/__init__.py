"""Training and evaluation: :func:`fit`, :class:`TrainConfig`, callbacks and loggers, :func:`evaluate`,
:func:`predict` and checkpoints.

``fit`` trains any :class:`~mmgraph.models.FusionModel` (or a module with the same call) on a
:class:`~mmgraph.data.MultiModalDataset` with the settings of one :class:`TrainConfig` (every default lives there
once; the CLI, the scikit-learn estimators and the comparison read it): Adam or SGD with an optional schedule, label
smoothing and class weights, early stopping on a validation metric with the best weights restored, gradient
clipping, AMP on CUDA, seeded shuffling, an atomic SHA-256-checked checkpoint per epoch with exact resume (refused
when the training settings changed, unless overridden), :class:`Callback` hooks and :class:`Logger` outputs
(:class:`CSVLogger`, :class:`TensorBoardLogger`, or MLflow / W&B in a few lines), and DistributedDataParallel when
launched by ``torchrun``. Batches are gathered with one tensor index per batch (``dataset[indices]``), never by
collating samples one at a time, optionally in DataLoader worker processes.

Modules: :mod:`~mmgraph.training.config` (``TrainConfig``), :mod:`~mmgraph.training.loop` (``fit``),
:mod:`~mmgraph.training.validation` (loss and validation metrics), :mod:`~mmgraph.training.callbacks`,
:mod:`~mmgraph.training.loggers`, :mod:`~mmgraph.training.checks` (argument and data checks),
:mod:`~mmgraph.training.checkpoint`, :mod:`~mmgraph.training.distributed`, :mod:`~mmgraph.training.logging`
(progress bar), :mod:`~mmgraph.training.prediction` (``predict``, ``evaluate``). The command line
``python -m mmgraph.train`` is :mod:`mmgraph.cli.train`.
"""

from mmgraph.training.callbacks import Callback
from mmgraph.training.checkpoint import CHECKPOINT_FORMAT, data_fingerprint, load_checkpoint, save_checkpoint
from mmgraph.training.config import MONITORS, OPTIMIZERS, SCHEDULERS, TASK_METRICS, TrainConfig
from mmgraph.training.loggers import CSVLogger, Logger, TensorBoardLogger
from mmgraph.training.loop import FitResult, fit
from mmgraph.training.prediction import evaluate, predict

__all__ = ["CHECKPOINT_FORMAT", "CSVLogger", "Callback", "FitResult", "Logger", "MONITORS", "OPTIMIZERS",
           "SCHEDULERS", "TASK_METRICS", "TensorBoardLogger", "TrainConfig", "data_fingerprint", "evaluate", "fit",
           "load_checkpoint", "predict", "save_checkpoint"]
