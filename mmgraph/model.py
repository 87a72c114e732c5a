"""Compatibility module: the model lives in :mod:`mmgraph.models` (``from mmgraph.model import FusionModel`` keeps
working)."""

from mmgraph.models import MODEL_FORMAT, FusionModel, Standardize  # noqa: F401

__all__ = ["FusionModel", "Standardize"]
