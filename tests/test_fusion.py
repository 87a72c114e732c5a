"""The fusion zoo: one interface, mask semantics, learning, the interaction task, validation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmgraph.fusion import (AttentionFusion, FusionBase, ModalityLinear, ProductFusion, available_fusions,
                            build_fusion, register_fusion)

ALL = ["attention", "cnn", "concat", "cross_attention", "gnn", "late", "lmf", "mfb", "mfh", "product", "seq2seq",
       "sum", "tfn"]
SEQUENCE = ["cnn", "gnn", "seq2seq"]
DIM, OUT = 8, 4


def needs_gnn(name):
    """The gnn fusion wraps mmgraph.gnn; skip it (only it) while that module cannot be imported."""
    if name == "gnn":
        pytest.importorskip("mmgraph.gnn")


def build(name, num_modalities=3, dim=DIM, out_dim=OUT, seed=0, **kwargs):
    needs_gnn(name)
    torch.manual_seed(seed)
    return build_fusion(name, num_modalities, dim, out_dim, **kwargs)


def seeded(call, *args):
    """``call(*args)`` after seeding torch's RNG: two calls in train mode draw the same dropout masks (GNN)."""
    torch.manual_seed(0)
    return call(*args)


def make_nodes(batch=6, num_modalities=3, dim=DIM, steps=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, num_modalities, dim) if steps is None else (batch, num_modalities, steps, dim)
    return torch.randn(shape, generator=gen)


def random_mask(batch=6, num_modalities=3, seed=1):
    """Random presence with at least one modality per sample, and sample 0 with a single present modality."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, num_modalities, generator=gen) > 0.5
    mask[:, -1] |= ~mask.any(1)
    mask[0] = False
    mask[0, 0] = True
    return mask


def total_loss(fusion, fused):
    loss = fused.pow(2).sum()
    return loss if fusion.aux_loss is None else loss + fusion.aux_loss


# ---------------------------------------------------------------------------------------------------- registry
def test_available_fusions_lists_every_method_sorted():
    assert available_fusions() == sorted(ALL)


def test_unknown_name_raises_value_error_listing_valid_names():
    with pytest.raises(ValueError, match="unknown fusion 'nope'") as info:
        build_fusion("nope", 2, DIM)
    for name in ALL:
        assert repr(name) in str(info.value)


def test_register_fusion_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already taken"):
        register_fusion("concat")(type("Other", (FusionBase,), {}))


def test_out_dim_none_means_dim():
    assert build("sum", out_dim=None).out_dim == DIM


# ---------------------------------------------------------------------------------------------------- interface
@pytest.mark.parametrize("num_modalities", [2, 6])
@pytest.mark.parametrize("name", ALL)
def test_output_shape_and_attributes(name, num_modalities):
    fusion = build(name, num_modalities)
    fused = fusion(make_nodes(num_modalities=num_modalities), random_mask(num_modalities=num_modalities))
    assert fused.shape == (6, OUT)
    assert (fusion.out_dim, fusion.num_modalities, fusion.dim) == (OUT, num_modalities, DIM)
    assert fusion.num_parameters == sum(p.numel() for p in fusion.parameters()) > 0
    assert isinstance(fusion.supports_sequences, bool)
    assert (fusion.aux_loss is not None) == (name == "seq2seq")
    assert f"dim={DIM}" in repr(fusion)


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    fusion = build(name)
    total_loss(fusion, fusion(make_nodes(), random_mask())).backward()
    for param_name, param in fusion.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {param_name}"


@pytest.mark.parametrize("num_modalities", [2, 6])
@pytest.mark.parametrize("name", ALL)
def test_no_nan_with_random_masks_including_single_modality(name, num_modalities):
    fusion = build(name, num_modalities)
    nodes = make_nodes(batch=2 * num_modalities, num_modalities=num_modalities).requires_grad_()
    single = torch.eye(num_modalities, dtype=torch.bool)  # each modality alone
    mask = torch.cat([single, random_mask(num_modalities, num_modalities)])
    fused = fusion(nodes, mask)
    assert torch.isfinite(fused).all()
    total_loss(fusion, fused).backward()
    assert torch.isfinite(nodes.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_same_seed_gives_identical_outputs(name):
    nodes, mask = make_nodes(), random_mask()
    assert torch.equal(build(name, seed=3)(nodes, mask), build(name, seed=3)(nodes, mask))
    assert not torch.equal(build(name, seed=3)(nodes, mask), build(name, seed=4)(nodes, mask))


@pytest.mark.parametrize("name", ALL)
def test_mask_none_means_every_modality_present(name):
    fusion, nodes = build(name), make_nodes()
    torch.testing.assert_close(seeded(fusion, nodes), seeded(fusion, nodes, torch.ones(6, 3, dtype=torch.bool)))


@pytest.mark.parametrize("name", ALL)
def test_reset_parameters_reinitialises_every_parameter(name):
    fusion = build(name)
    with torch.no_grad():
        for param in fusion.parameters():
            param.fill_(float("nan"))
    fusion.reset_parameters()
    assert all(torch.isfinite(param).all() for param in fusion.parameters())


# ---------------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", ALL)
def test_features_of_masked_modalities_do_not_change_the_output(name, train):
    """Holds for every method: masked entries are overwritten before fusion and then excluded or neutralised."""
    fusion = build(name).train(train)
    nodes, mask = make_nodes(), random_mask()
    changed = torch.where(mask.unsqueeze(-1), nodes, 100 * make_nodes(seed=5))
    with_nan = nodes.masked_fill(~mask.unsqueeze(-1), float("nan"))
    reference = seeded(fusion, nodes, mask)
    assert torch.equal(seeded(fusion, changed, mask), reference)
    assert torch.equal(seeded(fusion, with_nan, mask), reference)


def test_attention_weights_of_masked_modalities_are_zero():
    fusion = build("attention", num_modalities=5)
    mask = random_mask(batch=8, num_modalities=5)
    fusion(make_nodes(batch=8, num_modalities=5), mask)
    weights = fusion.last_weights
    assert isinstance(fusion, AttentionFusion) and weights.shape == (8, 5)
    assert torch.all(weights[~mask] == 0)
    assert torch.all(weights[mask] > 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(8))


def test_attention_fused_is_the_weighted_sum_of_modalities():
    fusion = build("attention", out_dim=DIM)
    nodes, mask = make_nodes(), random_mask()
    fused = fusion(nodes, mask)
    torch.testing.assert_close(fused, (fusion.last_weights.unsqueeze(-1) * nodes).sum(1))


def test_product_ignores_masked_modalities():
    fusion = build("product")
    assert isinstance(fusion, ProductFusion)
    nodes, mask = make_nodes(), random_mask()
    projected = fusion.proj(nodes)  # [B, M, out]
    expected = torch.stack([projected[b, mask[b]].prod(0) for b in range(nodes.shape[0])])
    torch.testing.assert_close(fusion(nodes, mask), expected)


def test_late_fusion_of_a_single_modality_is_that_modality_prediction():
    fusion = build("late")
    nodes = make_nodes()
    only_second = torch.zeros(6, 3, dtype=torch.bool)
    only_second[:, 1] = True
    torch.testing.assert_close(fusion(nodes, only_second), fusion.predictors(nodes)[:, 1])


def test_sum_of_present_modalities_is_additive():
    fusion = build("sum")
    nodes = make_nodes()
    first, rest = torch.zeros(6, 3, dtype=torch.bool), torch.ones(6, 3, dtype=torch.bool)
    first[:, 0], rest[:, 0] = True, False
    torch.testing.assert_close(fusion(nodes, first) + fusion(nodes, rest), fusion(nodes))


def test_tfn_keeps_only_the_terms_without_a_missing_modality():
    fusion = build("tfn", num_modalities=2)
    nodes = make_nodes(num_modalities=2)
    only_first = torch.tensor([[True, False]]).expand(6, 2)
    first = torch.cat([fusion.proj(nodes)[:, 0], torch.ones(6, 1)], dim=1)  # [z_1; 1]
    missing = torch.cat([torch.zeros(6, fusion.proj_dim), torch.ones(6, 1)], dim=1)  # [0; 1]
    expected = fusion.out(torch.einsum("bp,bq->bpq", first, missing).flatten(1))
    torch.testing.assert_close(fusion(nodes, only_first), expected)


def test_lmf_factor_of_a_missing_modality_is_the_neutral_one():
    fusion = build("lmf")
    nodes, mask = make_nodes(), random_mask()
    present = torch.einsum("bmd,mrdo->bmro", nodes, fusion.factors[:, :, :-1]) + fusion.factors[:, :, -1]
    factors = torch.where(mask[..., None, None], present, torch.ones(()))  # [B, M, R, out]
    expected = torch.einsum("r,bro->bo", fusion.rank_weights, factors.prod(1)) + fusion.bias
    torch.testing.assert_close(fusion(nodes, mask), expected)


def test_modality_linear_is_a_batch_of_independent_linear_maps():
    layer = ModalityLinear(3, 5, 2)
    x = torch.randn(4, 3, 5)
    expected = torch.stack([x[:, i] @ layer.weight[i] + layer.bias[i] for i in range(3)], 1)
    torch.testing.assert_close(layer(x), expected)


# ---------------------------------------------------------------------------------------------------- sequences
@pytest.mark.parametrize("name", SEQUENCE)
def test_sequence_fusions_take_sequences_with_modality_or_step_masks(name):
    fusion = build(name)
    assert fusion.supports_sequences
    nodes = make_nodes(steps=4)
    step_mask = torch.rand(6, 3, 4, generator=torch.Generator().manual_seed(2)) > 0.4
    step_mask[:, 0, 0] = True
    for mask in (None, random_mask(), step_mask):
        fused = fusion(nodes, mask)
        assert fused.shape == (6, OUT) and torch.isfinite(fused).all()
    changed = torch.where(step_mask.unsqueeze(-1), nodes, float("nan"))
    assert torch.equal(seeded(fusion, changed, step_mask), seeded(fusion, nodes, step_mask))


@pytest.mark.parametrize("name", sorted(set(ALL) - set(SEQUENCE)))
def test_non_sequence_fusions_reject_sequences(name):
    with pytest.raises(ValueError, match="does not take sequences"):
        build(name)(make_nodes(steps=4))


# ---------------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("name", ALL)
def test_every_method_reduces_the_training_loss(name):
    fusion = build(name)
    gen = torch.Generator().manual_seed(0)
    nodes = torch.randn(64, 3, DIM, generator=gen)
    target = torch.tanh(nodes.flatten(1) @ torch.randn(3 * DIM, OUT, generator=gen) / 3)
    optimiser = torch.optim.Adam(fusion.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(fusion(nodes), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def make_xor_task(n=512, d_in=2, seed=0):
    """Two modalities, label = sign(u1·x1) XOR sign(u2·x2): each modality alone says nothing about the label."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(2 * n, 2, d_in, generator=gen)  # [N, 2, d_in]
    signs = torch.einsum("nmd,md->nm", inputs, torch.randn(2, d_in, generator=gen)) > 0  # [N, 2]
    labels = (signs[:, 0] ^ signs[:, 1]).long()
    return inputs[:n], labels[:n], inputs[n:], labels[n:], signs[n:]


class TinyModel(nn.Module):
    """A Linear+ReLU encoder per modality, the fusion, and a linear head."""

    def __init__(self, fusion, d_in, dim):
        super().__init__()
        self.encoders = nn.ModuleList(nn.Sequential(nn.Linear(d_in, dim), nn.ReLU()) for _ in range(2))
        self.fusion = fusion
        self.head = nn.Linear(fusion.out_dim, 2)

    def forward(self, inputs):
        nodes = torch.stack([encoder(inputs[:, i]) for i, encoder in enumerate(self.encoders)], dim=1)
        return self.head(self.fusion(nodes))


def xor_test_accuracy(name, steps=150, dim=16, **kwargs):
    train_x, train_y, test_x, test_y, _ = make_xor_task()
    torch.manual_seed(0)
    model = TinyModel(build(name, 2, dim, dim, **kwargs), train_x.shape[-1], dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(train_x), train_y).backward()
        optimiser.step()
    with torch.no_grad():
        return (model(test_x).argmax(-1) == test_y).float().mean().item()


def test_xor_task_is_invisible_to_each_modality_alone():
    *_, test_y, signs = make_xor_task()
    for m in range(2):
        agreement = (signs[:, m].long() == test_y).float().mean().item()
        assert abs(agreement - 0.5) < 0.06


@pytest.mark.parametrize("name", ["tfn", "lmf", "mfb", "mfh", "cross_attention", "gnn"])
def test_interaction_methods_solve_the_xor_task(name):
    assert xor_test_accuracy(name) >= 0.9


def test_linear_concat_stays_at_chance_on_the_xor_task():
    assert xor_test_accuracy("concat", hidden_layers=0) < 0.65


# ---------------------------------------------------------------------------------------------------- seq2seq
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_seq2seq_aux_loss_is_a_scalar_that_decreases_when_trained_alone(cell):
    fusion = build("seq2seq", cell=cell)
    nodes = make_nodes(batch=32)
    optimiser = torch.optim.Adam(fusion.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):  # the normalised target (normalize=True) takes ~50 steps to halve the loss
        optimiser.zero_grad()
        fusion(nodes)
        assert fusion.aux_loss.dim() == 0 and fusion.aux_loss.requires_grad
        fusion.aux_loss.backward()
        optimiser.step()
        losses.append(fusion.aux_loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_seq2seq_learns_from_large_scale_embeddings_that_break_an_unnormalised_rnn():
    # an unnormalised CNN encoder's embeddings (std ~30) made the translation loss ~1000, which swamped the task loss
    # and saturated the GRU: seq2seq sat at chance on av-digits. The LayerNorm in front of the RNN fixes both.
    gen = torch.Generator().manual_seed(0)
    nodes = torch.randn(256, 3, DIM, generator=gen)
    labels = (nodes[:, 0, 0] > 0).long()
    accuracy = {}
    for normalize in (False, True):
        fusion = build("seq2seq", normalize=normalize)
        head = nn.Linear(fusion.out_dim, 2)
        optimiser = torch.optim.Adam([*fusion.parameters(), *head.parameters()], lr=1e-2)
        for _ in range(60):
            optimiser.zero_grad()
            (F.cross_entropy(head(fusion(30.0 * nodes)), labels) + fusion.aux_loss).backward()
            optimiser.step()
        accuracy[normalize] = (head(fusion(30.0 * nodes)).argmax(1) == labels).float().mean().item()
    assert accuracy[True] >= 0.95 and accuracy[False] < 0.8, accuracy


def test_seq2seq_aux_loss_ignores_missing_targets():
    fusion = build("seq2seq")
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[:, -1] = False  # the default target, the last modality, is missing everywhere
    fusion(make_nodes(), mask)
    assert fusion.aux_loss.item() == 0.0 and fusion.aux_loss.requires_grad


def test_seq2seq_can_hide_the_target_from_the_encoder():
    fusion = build("seq2seq", exclude_target=True, target=1)
    nodes = make_nodes()
    changed = nodes.clone()
    changed[:, 1] += 1.0
    assert torch.equal(fusion(nodes), fusion(changed))
    assert fusion.aux_loss.item() > 0


# ---------------------------------------------------------------------------------------------------- gnn
def test_gnn_fusion_wraps_multimodal_gnn():
    fusion = build("gnn", names=["text", "image", "audio"], conv="gcn", layers=1)
    assert list(fusion.gnn.modalities) == ["text", "image", "audio"]
    assert fusion.gnn.out_dim == OUT and fusion.gnn.conv_type == "gcn"
    nodes, mask = make_nodes(), random_mask()
    torch.testing.assert_close(seeded(fusion, nodes, mask), seeded(fusion.gnn.fuse, nodes, mask))


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ALL)
def test_wrong_number_of_modalities_or_dim_raises_value_error(name):
    fusion = build(name)
    with pytest.raises(ValueError, match=r"nodes: expected shape .*M=3, D=8.*got \(6, 4, 8\)"):
        fusion(make_nodes(num_modalities=4))
    with pytest.raises(ValueError, match=r"nodes: expected shape .*got \(6, 3, 5\)"):
        fusion(make_nodes(dim=5))


@pytest.mark.parametrize("name", ALL)
def test_a_sample_with_every_modality_masked_raises_value_error(name):
    mask = random_mask()
    mask[2] = False
    with pytest.raises(ValueError, match=r"every modality of sample\(s\) \[2\] is masked"):
        build(name)(make_nodes(), mask)


def test_mask_must_be_bool_of_shape_batch_by_modalities():
    fusion = build("concat")
    with pytest.raises(TypeError, match="mask: expected dtype torch.bool.*got torch.float32"):
        fusion(make_nodes(), torch.ones(6, 3))
    with pytest.raises(ValueError, match=r"mask: expected shape \(6, 3\).*got \(6, 2\)"):
        fusion(make_nodes(), torch.ones(6, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask: expected a BoolTensor"):
        fusion(make_nodes(), [[True] * 3] * 6)


def test_nodes_must_be_a_finite_floating_tensor():
    fusion = build("concat")
    with pytest.raises(TypeError, match="nodes: expected a floating-point tensor, got dtype torch.int64"):
        fusion(torch.ones(6, 3, DIM, dtype=torch.long))
    with pytest.raises(TypeError, match="nodes: expected a floating-point Tensor"):
        fusion([[0.0] * DIM] * 3)
    with pytest.raises(ValueError, match=r"B >= 1"):
        fusion(torch.ones(0, 3, DIM))
    nodes = make_nodes()
    nodes[1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf in a present entry .* \(1, 2\)"):
        fusion(nodes)


def test_invalid_hyper_parameters_name_the_argument():
    with pytest.raises(ValueError, match="dim: expected a positive int, got 0"):
        build_fusion("sum", 3, 0)
    with pytest.raises(ValueError, match="heads: dim must be divisible by heads"):
        build_fusion("cross_attention", 3, 6, heads=4)
    with pytest.raises(ValueError, match=r"proj_dim: the fusion tensor would have .* entries"):
        build_fusion("tfn", 12, 8, proj_dim=4)
    with pytest.raises(ValueError, match="cell: expected one of"):
        build_fusion("seq2seq", 3, 8, cell="rnn")
    with pytest.raises(ValueError, match="pool: expected one of"):
        build_fusion("cnn", 3, 8, pool="median")
