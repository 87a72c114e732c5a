"""Hooks into :func:`~mmgraph.training.fit`: the :class:`Callback` protocol.

A callback is any object with some of the three methods below (missing ones are skipped); subclass
:class:`Callback` to inherit no-op defaults. ``fit`` calls them on rank 0 only (under DDP every rank holds the same
metrics), in the order the callbacks were given::

    class PrintBest(Callback):
        def on_epoch_end(self, epoch, metrics):
            print(epoch, metrics["score"])

    fit(model, train, val, callbacks=[PrintBest()])

Early stopping and checkpointing stay inside the loop (they must be restored exactly on resume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import nn

if TYPE_CHECKING:
    from mmgraph.training.config import TrainConfig
    from mmgraph.training.loop import FitResult

__all__ = ["Callback"]

HOOKS = ("on_fit_start", "on_epoch_end", "on_fit_end")


@runtime_checkable
class Callback(Protocol):
    """What :func:`~mmgraph.training.fit` calls while it trains (every method optional; the defaults do nothing)."""

    def on_fit_start(self, model: nn.Module, config: TrainConfig) -> None:
        """Before the first epoch (after a resume: before the first epoch of this call)."""

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """After epoch ``epoch`` (1-based) with its record: ``train_loss``, ``lr``, ``val_loss``, ``val_<task>_<metric>``,
        ``val_accuracy``, ``score`` and ``time_s`` (the keys of ``FitResult.history``)."""

    def on_fit_end(self, result: FitResult) -> None:
        """After the last epoch, with the best weights restored (when ``restore_best``)."""


def check_hooks(arg: str, objects: Sequence[Any] | None, methods: Sequence[str]) -> list[Any]:
    """``objects`` as a list, each having at least one of ``methods``; raises ``TypeError`` naming ``arg`` else."""
    if objects is None:
        return []
    if isinstance(objects, (str, bytes, Mapping)) or not isinstance(objects, Sequence):
        raise TypeError(f"{arg}: expected a list, got {type(objects).__name__}")
    for position, obj in enumerate(objects):
        if not any(callable(getattr(obj, name, None)) for name in methods):
            raise TypeError(f"{arg}[{position}]: expected an object with {' / '.join(methods)}, got "
                            f"{type(obj).__name__}")
    return list(objects)


def call_hook(objects: Sequence[Any], name: str, *args: Any) -> None:
    """``obj.name(*args)`` for every object that has the method."""
    for obj in objects:
        hook = getattr(obj, name, None)
        if callable(hook):
            hook(*args)
