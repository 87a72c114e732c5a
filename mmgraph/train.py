"""Compatibility module: ``from mmgraph.train import fit`` and ``python -m mmgraph.train`` keep working.

The training code lives in :mod:`mmgraph.training`, the command line in :mod:`mmgraph.cli.train`.
"""

from mmgraph.cli.train import DATASETS, DEFAULTS, load_dataset, load_npz, main  # noqa: F401
from mmgraph.training import (CHECKPOINT_FORMAT, MONITORS, OPTIMIZERS, SCHEDULERS, TASK_METRICS,  # noqa: F401
                              FitResult, evaluate, fit, load_checkpoint, predict, save_checkpoint)

__all__ = ["FitResult", "evaluate", "fit", "main", "predict"]

if __name__ == "__main__":
    from mmgraph.training.distributed import _end_worker_process

    main()
    _end_worker_process()  # a finished torchrun worker exits now, skipping a teardown that can abort (no-op otherwise)
