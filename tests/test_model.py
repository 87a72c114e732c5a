"""FusionModel: encoders + fusion + task heads."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmgraph.model import FusionModel

DIM = 16


def _encoders() -> dict[str, nn.Module]:
    return {"text": nn.Linear(10, DIM), "image": nn.Linear(6, DIM), "audio": nn.Linear(4, DIM)}


def _inputs(batch: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"text": torch.randn(batch, 10, generator=gen), "image": torch.randn(batch, 6, generator=gen),
            "audio": torch.randn(batch, 4, generator=gen)}


class _Recorder(nn.Module):
    """A fusion that averages the present nodes and remembers the last mask it saw."""

    supports_sequences = True

    def __init__(self) -> None:
        super().__init__()
        self.out_dim = DIM
        self.masks: list[torch.Tensor | None] = []
        self.nodes_shapes: list[tuple[int, ...]] = []

    def forward(self, nodes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.masks.append(mask)
        self.nodes_shapes.append(tuple(nodes.shape))
        weights = torch.ones(nodes.shape[:-1]) if mask is None else mask.float()
        fused = (nodes * weights.unsqueeze(-1)).sum(1) / weights.sum(1).unsqueeze(-1).clamp(min=1)
        return fused if fused.dim() == 2 else fused.mean(1)


@pytest.mark.parametrize("fusion", ["concat", "gnn"])
def test_single_task_logits_have_one_column_per_class(fusion):
    model = FusionModel(_encoders(), fusion, {"label": 3}, dim=DIM)
    out = model(_inputs())
    assert list(out) == ["label"] and out["label"].shape == (5, 3)


def test_multi_task_heads_share_the_trunk_and_regression_has_one_output():
    model = FusionModel(_encoders(), "gnn", {"genotype": 2, "diet": 5, "score": 0}, dim=DIM, head_hidden=8)
    out = model(_inputs(7))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"genotype": (7, 2), "diet": (7, 5), "score": (7, 1)}
    assert model.fusion.names == ["text", "image", "audio"]  # "gnn" gets the modality names


def test_mask_reaches_the_fusion_and_missing_inputs_cannot_change_the_output():
    fusion = _Recorder()
    model = FusionModel(_encoders(), fusion, {"label": 2}, dim=DIM).eval()
    inputs = _inputs(4)
    mask = torch.tensor([[True, False, True]] * 4)
    out = model(inputs, mask)["label"]
    assert torch.equal(fusion.masks[-1], mask)
    inputs["image"] = torch.full_like(inputs["image"], float("nan"))
    assert torch.equal(model(inputs, mask)["label"], out)


def test_missing_modality_gradients_stay_finite_with_nan_inputs():
    model = FusionModel(_encoders(), "concat", {"label": 2}, dim=DIM)
    inputs = _inputs(4)
    inputs["audio"][0] = float("nan")
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0, 2] = False
    model(inputs, mask)["label"].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_modality_dropout_never_drops_every_modality_of_a_sample():
    fusion = _Recorder()
    model = FusionModel(_encoders(), fusion, {"label": 2}, dim=DIM, modality_dropout=0.9).train()
    torch.manual_seed(0)
    mask = torch.rand(2000, 3) > 0.3
    mask[torch.arange(2000), torch.randint(0, 3, (2000,))] = True  # every sample has something present
    inputs = {k: v.repeat(400, 1) for k, v in _inputs(5).items()}
    model(inputs, mask)
    dropped = fusion.masks[-1]
    assert dropped.any(1).all()
    assert not (dropped & ~mask).any()  # never revives a missing modality
    assert (mask.sum(1) - dropped.sum(1)).float().mean() > 1.0  # and it does drop


def test_modality_dropout_is_off_in_eval_mode():
    fusion = _Recorder()
    model = FusionModel(_encoders(), fusion, {"label": 2}, dim=DIM, modality_dropout=0.9).eval()
    model(_inputs())
    assert fusion.masks[-1] is None


def test_sequence_embeddings_become_temporal_nodes_with_combined_masks():
    fusion = _Recorder()
    encoders = {"a": nn.Linear(3, DIM), "b": nn.Linear(5, DIM)}  # per-step encoders: [B, T, F] -> [B, T, D]
    model = FusionModel(encoders, fusion, {"label": 2}, dim=DIM).eval()
    inputs = {"a": torch.randn(4, 6, 3), "b": torch.randn(4, 6, 5)}
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    steps = torch.ones(4, 6, dtype=torch.bool)
    steps[:, 4:] = False
    out = model(inputs, mask, step_mask={"a": steps})
    assert out["label"].shape == (4, 2) and fusion.nodes_shapes[-1] == (4, 2, 6, DIM)
    expected = mask.unsqueeze(-1).expand(4, 2, 6).clone()
    expected[:, 0, 4:] = False
    assert torch.equal(fusion.masks[-1], expected)


def test_gnn_fuses_sequences_end_to_end():
    encoders = {"a": nn.Linear(3, DIM), "b": nn.Linear(5, DIM)}
    model = FusionModel(encoders, "gnn", {"label": 2}, dim=DIM, fusion_kwargs={"heads": 2})
    steps = torch.ones(4, 6, dtype=torch.bool)
    steps[0, 3:] = False
    out = model({"a": torch.randn(4, 6, 3), "b": torch.randn(4, 6, 5)}, step_mask={"b": steps})
    assert out["label"].shape == (4, 2) and torch.isfinite(out["label"]).all()


def test_gnn_fuses_a_vector_and_unaligned_sequences_by_name():
    # image [B, D] + text [B, 12, D] + audio [B, 16, D]: nodes cannot be stacked; the GNN takes them by name
    encoders = {"image": nn.Linear(6, DIM), "text": nn.Linear(3, DIM), "audio": nn.Linear(5, DIM)}
    model = FusionModel(encoders, "gnn", {"label": 2}, dim=DIM,
                        fusion_kwargs={"heads": 2, "temporal_window": 1}).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = {"image": torch.randn(4, 6, generator=gen), "text": torch.randn(4, 12, 3, generator=gen),
              "audio": torch.randn(4, 16, 5, generator=gen)}
    mask = torch.tensor([[True, True, True], [False, True, True], [True, False, True], [True, True, False]])
    step_mask = {"audio": torch.arange(16).expand(4, 16) < torch.tensor([[16], [3], [9], [1]])}
    logits = model(inputs, mask, step_mask)["label"]
    embeddings = {name: encoders[name](x) for name, x in inputs.items()}
    expected = model.heads["label"](model.fusion.gnn(embeddings, mask, step_mask))
    torch.testing.assert_close(logits, expected)
    padded = {**inputs, "audio": inputs["audio"].clone()}
    padded["audio"][1, 3:] = 1e3  # padded steps change nothing
    torch.testing.assert_close(model(padded, mask, step_mask)["label"], logits)


def test_aux_loss_forwards_the_fusions():
    model = FusionModel(_encoders(), "seq2seq", {"label": 2}, dim=DIM)
    assert model.aux_loss is None or model.aux_loss.dim() == 0
    model(_inputs())
    assert model.aux_loss is not None and model.aux_loss.dim() == 0
    assert FusionModel(_encoders(), "concat", {"label": 2}, dim=DIM).aux_loss is None


@pytest.mark.parametrize("fusion", ["gnn", "late"])
def test_unimodal_heads_are_on_by_default_for_classification_tasks_only(fusion):
    tasks = {"genotype": 2, "diet": 5, "score": 0}
    model = FusionModel(_encoders(), fusion, tasks, dim=DIM)
    assert model.unimodal_weight == 1.0 and model._config["unimodal_weight"] == 1.0
    assert {task: list(heads) for task, heads in model.unimodal_heads.items()} == {
        "genotype": ["text", "image", "audio"], "diet": ["text", "image", "audio"]}
    assert model.unimodal_heads["diet"]["audio"].out_features == 5
    assert FusionModel(_encoders(), fusion, tasks, dim=DIM, unimodal_weight=0).unimodal_heads is None
    assert FusionModel(_encoders(), fusion, {"score": 0}, dim=DIM).unimodal_heads is None  # regression only
    one = FusionModel({"text": nn.Linear(10, DIM)}, fusion, tasks, dim=DIM)
    assert one.unimodal_heads is None  # one modality: its head would be the task head's twin


def test_unimodal_loss_is_each_modalitys_head_on_its_own_present_samples():
    model = FusionModel(_encoders(), "concat", {"label": 3, "score": 0}, dim=DIM, unimodal_weight=0.5)
    inputs, targets = _inputs(6), {"label": torch.tensor([0, 1, 2, 0, 1, 2]), "score": torch.randn(6)}
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[:3, 1] = False  # image missing in the first three samples
    assert all(not head.weight.any() and not head.bias.any() for head in model.unimodal_heads["label"].values())
    torch.manual_seed(0)
    for head in model.unimodal_heads["label"].values():  # zero at initialisation; random here, so masks matter
        nn.init.normal_(head.weight)
    model.train()
    model(inputs, mask)
    loss = model.unimodal_loss(targets, {"label": 2.0, "score": 1.0})
    expected = 0.0
    for m, name in enumerate(model.modalities):
        embedding = model.encoders[name](torch.where(mask[:, m:m + 1], inputs[name], 0.0))
        per_sample = F.cross_entropy(model.unimodal_heads["label"][name](embedding), targets["label"],
                                     reduction="none")
        expected = expected + per_sample[mask[:, m]].mean() / 3
    torch.testing.assert_close(loss, 0.5 * 2.0 * expected)
    assert loss.requires_grad and model.unimodal_loss(targets) is None  # consumed
    loss.backward()
    assert model.encoders["image"].weight.grad.abs().sum() > 0  # it trains the encoders
    model(inputs, mask)
    model.eval()
    model(inputs, mask)
    assert model.unimodal_loss(targets) is None  # training-mode forwards only; an eval forward drops stale logits


def test_unimodal_heads_pool_sequences_over_their_present_steps_and_never_change_predictions():
    encoders = {"a": nn.Linear(3, DIM), "b": nn.Linear(5, DIM)}
    model = FusionModel(encoders, "gnn", {"label": 2}, dim=DIM, fusion_kwargs={"heads": 2})
    inputs = {"a": torch.randn(4, 6, 3), "b": torch.randn(4, 6, 5)}
    steps = torch.ones(4, 6, dtype=torch.bool)
    steps[0, 2:] = False
    model.train()
    model(inputs, step_mask={"a": steps})
    logits, present = model._unimodal
    pooled = encoders["a"](inputs["a"][0, :2]).mean(0)
    torch.testing.assert_close(logits["label"][0, 0], model.unimodal_heads["label"]["a"](pooled))
    assert present is None or bool(present.all())
    model.eval()
    before = model(inputs, step_mask={"a": steps})["label"]
    with torch.no_grad():
        for heads in model.unimodal_heads.values():
            for head in heads.values():
                head.weight.add_(1.0)
    torch.testing.assert_close(model(inputs, step_mask={"a": steps})["label"], before)


def test_input_keys_are_validated_by_name():
    model = FusionModel(_encoders(), "concat", {"label": 2}, dim=DIM)
    inputs = _inputs()
    del inputs["audio"]
    inputs["video"] = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"missing \['audio'\], unknown \['video'\]"):
        model(inputs)
    with pytest.raises(ValueError, match=r"mask: expected shape \(5, 3\)"):
        model(_inputs(), torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask: expected a BoolTensor"):
        model(_inputs(), torch.ones(5, 3))


def test_encoder_output_width_is_checked():
    encoders = _encoders()
    encoders["audio"] = nn.Linear(4, DIM + 1)
    model = FusionModel(encoders, "sum", {"label": 2}, dim=DIM)
    with pytest.raises(ValueError, match=r"encoders\['audio'\]: expected output \[B, 16\]"):
        model(_inputs())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"tasks": {"label": 1}}, ValueError, r"tasks\['label'\]: expected an int >= 2"),
    ({"tasks": {}}, TypeError, "tasks: expected a non-empty dict"),
    ({"fusion": 3}, TypeError, "fusion: expected a fusion name"),
    ({"fusion": "nope"}, ValueError, "unknown fusion 'nope'"),
    ({"modality_dropout": 1.0}, ValueError, r"modality_dropout: expected a float in \[0, 1\)"),
    ({"encoders": {}}, TypeError, "encoders: expected a non-empty dict"),
    ({"unimodal_weight": -0.5}, ValueError, "unimodal_weight: expected a finite float >= 0, got -0.5"),
    ({"unimodal_weight": True}, ValueError, "unimodal_weight: expected a finite float >= 0, got True"),
])
def test_bad_constructor_arguments_raise_clearly(kwargs, error, message):
    arguments = {"encoders": _encoders(), "fusion": "concat", "tasks": {"label": 2}, "dim": DIM, **kwargs}
    with pytest.raises(error, match=message):
        FusionModel(**arguments)


def test_one_masked_softmax_gives_zeros_on_an_all_masked_row_with_finite_gradients():
    from mmgraph.fusion import masked_softmax
    from mmgraph.gnn.layer import masked_softmax as gnn_masked_softmax

    assert gnn_masked_softmax is masked_softmax  # one implementation (the fusion's gave NaN here, the GNN's 0)
    scores = torch.randn(3, 4, 2, requires_grad=True)  # [B, M, heads]
    mask = torch.tensor([[True, False, True, True], [False] * 4, [False, False, True, False]]).unsqueeze(-1)
    weights = masked_softmax(scores, mask, dim=1)
    assert torch.equal(weights[1], torch.zeros(4, 2))
    assert torch.allclose(weights[[0, 2]].sum(1), torch.ones(2, 2))
    assert torch.equal(weights[0, 1], torch.zeros(2)) and torch.equal(weights[2, 2], torch.ones(2))
    weights.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_fusion_model_reads_what_a_fusion_supports_from_its_class_not_its_name(monkeypatch):
    from mmgraph.fusion import FusionBase, available_fusions, base, fusion_class

    for name in available_fusions():
        cls = fusion_class(name)
        flags = (cls.supports_sequences, cls.supports_unaligned, cls.supports_explain, cls.uses_modality_names)
        assert all(isinstance(flag, bool) for flag in flags), name
    assert fusion_class("gnn").supports_explain and not fusion_class("concat").supports_explain

    class ExplainingMean(FusionBase):
        supports_explain = True
        uses_modality_names = True

        def __init__(self, num_modalities, dim, out_dim=None, names=None):
            super().__init__(num_modalities, dim, out_dim)
            self.names = names

        def _fuse(self, nodes, mask):
            return nodes.mean(1)

        def explain(self, nodes, mask=None, step_mask=None):
            return {"node_type": torch.arange(nodes.shape[1]), "mean": nodes.mean(1)}

    monkeypatch.setitem(base._REGISTRY, "test-explaining-mean", ExplainingMean)  # registered for this test only
    model = FusionModel(_encoders(), "test-explaining-mean", {"label": 2}, dim=DIM)
    assert model.fusion.names == ["text", "image", "audio"]
    explanation = model.explain(_inputs(3))
    assert explanation["node_modality"] == ["text", "image", "audio"] and explanation["mean"].shape == (3, DIM)
    with pytest.raises(TypeError, match="supports_explain"):
        FusionModel(_encoders(), "concat", {"label": 2}, dim=DIM).explain(_inputs(3))
    with pytest.raises(TypeError, match="supports_unaligned is False"):
        fusion_class("concat")(3, DIM).fuse_unaligned({"text": torch.zeros(2, DIM)})


def test_eval_mode_switches_every_submodule_and_restores_the_mode_also_after_an_error():
    from mmgraph.utils import eval_mode

    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    with eval_mode(model):
        assert not model.training and not model[1].training
    assert model.training and model[1].training
    with pytest.raises(RuntimeError, match="inside"), eval_mode(model):
        raise RuntimeError("inside")
    assert model.training and model[1].training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training and not model[1].training
