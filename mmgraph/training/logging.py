"""What :func:`~mmgraph.training.fit` shows while it trains: a progress bar over epochs (the per-epoch files are
written by the loggers of :mod:`mmgraph.training.loggers`)."""

from __future__ import annotations

import sys
from typing import Any


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
