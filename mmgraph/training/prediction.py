"""Inference: :func:`predict` (class labels, probabilities or raw outputs for every sample) and :func:`evaluate`
(metrics per task on a data set with targets)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from mmgraph.training.checks import _model_tasks
from mmgraph.utils import check_int as _check_int
from mmgraph.utils import resolve_device

__all__ = ["evaluate", "predict"]


@torch.no_grad()
def predict(model: nn.Module, data, batch_size: int = 256, device: str | torch.device = "auto",
            logits: bool = False, proba: bool = False, mask=None, step_mask=None) -> dict[str, Any]:
    """Predictions of ``model`` for every sample of ``data``, on CPU.

    Args:
        model: a :class:`~mmgraph.models.FusionModel` (trained, or loaded with ``FusionModel.load``).
        data: a :class:`~mmgraph.data.MultiModalDataset` (targets not needed), or raw columns ``{modality:
            column}`` / a pandas ``DataFrame`` in any key order: arrays ``[N, ...]``, strings, ragged lists of
            ``[T_i, D]`` arrays, ``None`` for a missing entry (the forms of ``MultiModalDataset.from_columns``).
            Modalities are matched to the model's by name, and the model's own preprocessing
            (:meth:`FusionModel.prepare <mmgraph.models.FusionModel.prepare>`: kinds, tokenisation, padding, step
            masks) is applied, so padding never reaches a prediction.
        mask: with columns: ``{modality: bool array [N]}`` or a bool array ``[N, M]`` whose columns
            follow ``data``'s key order; True = present (a masked entry may hold NaN). With a dataset: modalities
            to remove at test time, ``BoolTensor[N, M]`` in ``data.modalities`` order or ``{modality: BoolTensor[N]}``,
            and-ed with the dataset's own mask; every sample must keep a present modality (draw test-time drops
            with :func:`mmgraph.data.drop_modalities` of ``data.mask``, which guarantees it).
        step_mask: only with columns: ``{modality: bool array [N, T]}`` for padded arrays ``[N, T, D]`` (True =
            real step).
        logits: return the raw outputs ``Tensor[N, C]`` per task.
        proba: return class probabilities ``Tensor[N, C]`` (softmax) for classification tasks (regression tasks
            give their values ``Tensor[N]``).

    Returns:
        ``{task: predictions}``: class labels ``LongTensor[N]`` -- or, for a task trained on string labels, an
        ndarray of those strings -- and values ``Tensor[N]`` for regression. The model is evaluated in eval mode
        on ``device`` (its previous mode is restored). ``N = 0`` samples give empty outputs of those types
        (``[0]``, ``[0, C]``), after the same checks of the inputs' shapes and dtypes, so a pipeline whose
        filter left no rows goes on (scikit-learn raises instead).

    Integer arrays of a modality the model takes as float features (its ``input_spec``) are feature values, cast
    to float; only the modalities whose encoder embeds token ids take them as ids.
    """
    from mmgraph.data import MultiModalDataset
    from mmgraph.data.columns import is_dataframe

    _check_int("batch_size", batch_size, 1)
    if logits and proba:
        raise ValueError("logits, proba: pick one; logits=True gives raw scores, proba=True probabilities")
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    tasks = _model_tasks(raw_model)
    columns = isinstance(data, Mapping) or is_dataframe(data)
    if not columns and step_mask is not None:
        raise ValueError("step_mask: only used with a dict of columns; a MultiModalDataset carries its own step "
                         "masks")
    removal = None
    if isinstance(data, MultiModalDataset) and mask is not None:
        removal = _test_time_mask(data, mask)  # [N, M] in data.modalities order
    if hasattr(raw_model, "prepare") and (columns or isinstance(data, MultiModalDataset)):
        order = None if columns else list(data.modalities)
        inputs, prepared_mask, step_mask = raw_model.prepare(data, mask if columns else None, step_mask)
        if columns or not _own_tensors(data, inputs, step_mask):
            data = MultiModalDataset(inputs, None, mask=prepared_mask, step_mask=step_mask)
            if removal is not None:  # the prepared data set follows the model's modality order
                removal = removal[:, [order.index(name) for name in data.modalities]]
        # else: prepare returned the data set's own tensors in its own order, checked when it was built (a second
        # data set would check every value again: predict on av-digits' test part is 1.12-1.13x faster without it)
    elif columns:
        data = MultiModalDataset(_features_as_floats(data, raw_model), None, mask=mask, step_mask=step_mask)
    elif not isinstance(data, MultiModalDataset):
        hint = (" (a MultiModalBatch: pass predict(model, batch.inputs, mask=batch.named_mask))"
                if hasattr(data, "inputs") else "")
        raise TypeError(f"data: expected a MultiModalDataset or a dict {{modality: array [N, ...]}}, got "
                        f"{type(data).__name__}{hint}")
    _check_modalities("data", data.modalities, raw_model)
    device = resolve_device(device)
    # one-sample fast path: walking every submodule for .to() / .eval() costs more than the forward of one sample,
    # so a model already on `device` (judged by its first parameter: .to() moves all) and in eval mode is left as is
    first = next(raw_model.parameters(), None)
    if first is None or first.device != _indexed(device):
        raw_model.to(device)
    was_training = raw_model.training
    if was_training:
        raw_model.eval()
    chunks: dict[str, list[Tensor]] = {task: [] for task in tasks}
    if len(data) == 0:
        _check_empty(raw_model, data)
        chunks = {task: [torch.zeros(0, classes or 1)] for task, classes in tasks.items()}
    try:
        for start in range(0, len(data), batch_size):
            rows = None if len(data) <= batch_size else torch.arange(start, min(start + batch_size, len(data)))
            batch = _batch(data, rows).to(device, non_blocking=True)
            if removal is not None:
                batch.mask = (removal if rows is None else removal[rows]).to(device)
            # nothing masked: no mask, so the fusion takes its sample-independent path (the same outputs)
            mask_by_name = None if bool(batch.mask.all()) else batch.named_mask
            outputs = raw_model(batch.inputs, mask_by_name, batch.step_mask)
            for task in tasks:
                chunks[task].append(outputs[task].float().cpu())
    finally:
        if was_training:
            raw_model.train()
    results = {task: torch.cat(parts) for task, parts in chunks.items()}
    if logits:
        return results
    if proba:
        return {task: out.softmax(-1) if tasks[task] else out.squeeze(-1) for task, out in results.items()}
    predictions: dict[str, Any] = {}
    for task, out in results.items():
        if not tasks[task]:
            predictions[task] = out.squeeze(-1)
        elif task in getattr(raw_model, "string_labels", ()):
            predictions[task] = np.asarray(raw_model.class_names[task])[out.argmax(-1).numpy()]
        else:
            predictions[task] = out.argmax(-1)
    return predictions


def _own_tensors(data, inputs: Mapping[str, Tensor], step_mask: Mapping[str, Tensor] | None) -> bool:
    """Whether ``prepare(data)`` returned ``data``'s own feature and step-mask tensors, in ``data``'s modality order
    (its masks are ``data.mask``'s columns by construction)."""
    own_steps = data.step_mask or {}
    features = data.features  # the stored tensors, not copies
    return (list(inputs) == data.modalities and all(inputs[m] is features[m] for m in inputs)
            and set(step_mask or {}) == set(own_steps)
            and all(step_mask[m] is own_steps[m] for m in own_steps))


def evaluate(model: nn.Module, dataset, batch_size: int = 256, device: str | torch.device = "auto"
             ) -> dict[str, dict[str, Any]]:
    """Metrics of ``model`` on ``dataset`` (a :class:`~mmgraph.data.MultiModalDataset` with targets for the
    model's tasks): ``{task: classification_metrics(...)}`` (accuracy, macro_recall, macro_f1, confusion_matrix)
    or ``{task: regression_metrics(...)}`` (mse, mae, r2); the regression task ``"sentiment"`` (MOSI / MOSEI)
    also gets ``sentiment_metrics`` (acc2, acc2_nonzero, f1, f1_nonzero, acc7, pearson). String labels are matched
    to the model's classes by name, so a test set may hold fewer classes than the training set."""
    from mmgraph.data import MultiModalDataset
    from mmgraph.metrics import classification_metrics, regression_metrics, sentiment_metrics

    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    tasks = _model_tasks(raw_model)
    if not isinstance(dataset, MultiModalDataset):
        raise TypeError(f"dataset: expected a MultiModalDataset with targets, got {type(dataset).__name__}; for "
                        "raw arrays use predict(model, {modality: array}) and compare with your labels")
    missing = [task for task in tasks if task not in dataset.tasks]
    if missing:
        raise ValueError(f"dataset: no targets for the model's tasks {missing}; the dataset has tasks "
                         f"{list(dataset.tasks)}. Name the targets as the model's tasks, e.g. "
                         f"MultiModalDataset(features, {{{missing[0]!r}: labels}})")
    outputs = predict(model, dataset, batch_size=batch_size, device=device, logits=True)
    targets = dataset.targets
    metrics = {}
    for task, classes in tasks.items():
        if not classes:
            metrics[task] = regression_metrics(targets[task], outputs[task].squeeze(-1))
            if task == "sentiment":
                metrics[task].update(sentiment_metrics(targets[task], outputs[task].squeeze(-1)))
            continue
        metrics[task] = classification_metrics(_model_class_ids(raw_model, dataset, task), outputs[task], classes)
    return metrics


def _model_class_ids(model: nn.Module, dataset, task: str) -> Tensor:
    """``dataset``'s targets of ``task`` as the model's class ids: string labels are matched by class name."""
    targets = dataset.targets[task]
    if task not in dataset.string_labels:
        return targets
    model_names = getattr(model, "class_names", {}).get(task)
    if model_names is None or task not in getattr(model, "string_labels", ()):
        raise ValueError(f"dataset: targets[{task!r}] are strings but the model was trained on class ids; build "
                         "the dataset with the same kind of labels as the training set")
    lookup = {name: i for i, name in enumerate(model_names)}
    unknown = [name for name in dataset.class_names[task] if name not in lookup]
    if unknown:
        raise ValueError(f"dataset: targets[{task!r}] hold classes {unknown} the model does not know; its classes "
                         f"are {model_names}")
    to_model = torch.tensor([lookup[name] for name in dataset.class_names[task]], dtype=torch.long)  # per class
    return to_model[targets]


def _test_time_mask(data, mask) -> Tensor:
    """``data.mask & mask`` (``BoolTensor[N, M]``) after checking ``mask`` and that no sample is left empty."""
    from mmgraph.data.dataset import _check_mask

    if isinstance(mask, Mapping):
        unknown = [m for m in mask if m not in data.modalities]
        if unknown:
            raise ValueError(f"mask: unknown modalities {unknown}; expected some of {data.modalities}")
    elif not isinstance(mask, (Tensor, np.ndarray)):
        raise TypeError(f"mask: expected a BoolTensor [N, M] or {{modality: BoolTensor [N]}}, got "
                        f"{type(mask).__name__}")
    try:
        combined = data.mask & _check_mask(mask, data.modalities, len(data))
    except ValueError as error:
        raise ValueError(f"{error} (predict's test-time mask, {len(data)} samples, modalities "
                         f"{data.modalities})") from None
    empty = (~combined.any(1)).nonzero().squeeze(1)
    if empty.numel():
        raise ValueError(f"mask: with the dataset's own mask, {empty.numel()} samples have every modality masked "
                         f"(first: {empty[:5].tolist()}); draw test-time drops with "
                         "mmgraph.data.drop_modalities(data.mask, rate), which keeps one present modality per sample")
    return combined


def _indexed(device: torch.device) -> torch.device:
    """``device`` as a tensor on it reports it: ``"cuda"`` (no index) is the current CUDA device ``cuda:N``."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _batch(data, rows: Tensor | None):
    """The samples ``rows`` of ``data`` as a batch; all of them (``rows=None``) without a gather (the stored tensors:
    one-sample predict pays for no copy)."""
    from mmgraph.data import MultiModalBatch

    if rows is not None:
        return data[rows]
    return MultiModalBatch(data.features, data.mask, {}, data.step_mask)


def _features_as_floats(data: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """``data`` with the integer (and bool) arrays of the model's float modalities (``input_spec``) cast to
    float32: there they are feature values, which a :class:`~mmgraph.data.MultiModalDataset` would otherwise store
    as token ids (and refuse when negative)."""
    spec = getattr(model, "input_spec", {})
    floats = {}
    for name, x in data.items():
        if spec.get(name, {}).get("dtype") == "float":
            if isinstance(x, Tensor) and not (x.is_floating_point() or x.is_complex()):
                x = x.float()
            elif isinstance(x, np.ndarray) and x.dtype.kind in "biu":
                x = x.astype(np.float32)
        floats[name] = x
    return floats


def _check_empty(model: nn.Module, data) -> None:
    """The checks a forward pass would make of 0 samples' inputs (shapes, dtypes), without running the model, whose
    fusions refuse an empty batch."""
    check = getattr(model, "_check_inputs", None)
    if check is not None:
        check(data[torch.arange(0)].inputs)


def _check_modalities(arg: str, modalities: list[str], model: nn.Module) -> None:
    expected = list(getattr(model, "modalities", modalities))
    missing = [m for m in expected if m not in modalities]
    unknown = [m for m in modalities if m not in expected]
    if missing or unknown:
        raise ValueError(f"{arg}: the model takes modalities {expected}; missing {missing}, unknown {unknown}")
