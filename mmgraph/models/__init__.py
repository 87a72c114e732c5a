"""The model: :class:`FusionModel` (per-modality encoders -> one fusion -> one head per task), its factory
(:meth:`FusionModel.from_dataset`, in :mod:`~mmgraph.models.factory`), preprocessing (:class:`Standardize`) and its
file (:meth:`FusionModel.save` / :meth:`FusionModel.load`, in :mod:`~mmgraph.models.serialization`)."""

from mmgraph.models.fusion_model import FusionModel
from mmgraph.models.preprocessing import Standardize
from mmgraph.models.serialization import MODEL_FORMAT

__all__ = ["MODEL_FORMAT", "FusionModel", "Standardize"]
