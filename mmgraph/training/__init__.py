"""Training and evaluation: :func:`fit`, :func:`evaluate`, :func:`predict` and checkpoints.

``fit`` trains any :class:`~mmgraph.models.FusionModel` (or a module with the same call) on a
:class:`~mmgraph.data.MultiModalDataset`: Adam or SGD with an optional schedule, label smoothing and class weights,
early stopping on a validation metric with the best weights restored, gradient clipping, AMP on CUDA, seeded
shuffling, an atomic SHA-256-checked checkpoint per epoch with exact resume (refused when the training settings
changed, unless overridden), per-epoch CSV/TensorBoard logs, and DistributedDataParallel when launched by
``torchrun``. Batches are gathered with one tensor index per batch (``dataset[indices]``), never by collating samples
one at a time.

Modules: :mod:`~mmgraph.training.loop` (``fit``), :mod:`~mmgraph.training.checks` (argument and data checks),
:mod:`~mmgraph.training.checkpoint`, :mod:`~mmgraph.training.distributed`, :mod:`~mmgraph.training.logging`,
:mod:`~mmgraph.training.prediction` (``predict``, ``evaluate``). The command line ``python -m mmgraph.train`` is
:mod:`mmgraph.cli.train`.
"""

from mmgraph.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from mmgraph.training.checks import MONITORS, OPTIMIZERS, SCHEDULERS, TASK_METRICS
from mmgraph.training.loop import FitResult, fit
from mmgraph.training.prediction import evaluate, predict

__all__ = ["CHECKPOINT_FORMAT", "MONITORS", "OPTIMIZERS", "SCHEDULERS", "TASK_METRICS", "FitResult", "evaluate",
           "fit", "load_checkpoint", "predict", "save_checkpoint"]
