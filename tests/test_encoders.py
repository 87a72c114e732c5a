"""mmgraph.encoders: registry, output shapes, step masks and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmgraph.encoders import available_encoders, build_encoder, register_encoder

D = 8


def _step_mask(lengths: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps) < torch.tensor(lengths)[:, None]  # [B, T]


def test_registry_lists_builds_and_rejects_unknown_names():
    assert {"mlp", "cnn", "gru", "lstm", "conv1d"} <= set(available_encoders())
    with pytest.raises(ValueError, match=r"unknown encoder 'transformer'.*'cnn'"):
        build_encoder("transformer", D)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("mlp")(nn.Linear)


def test_mlp_maps_the_last_axis_so_it_also_works_per_step():
    encoder = build_encoder("mlp", D, in_dim=5, hidden=16, layers=3, dropout=0.1)
    assert encoder(torch.randn(4, 5)).shape == (4, D)
    assert encoder(torch.randn(4, 7, 5)).shape == (4, 7, D)
    assert sum(isinstance(m, nn.Linear) for m in encoder.modules()) == 3
    with pytest.raises(ValueError, match=r"x: expected a float tensor \[\.\.\., 5\]"):
        encoder(torch.randn(4, 6))


def test_cnn_encodes_images():
    encoder = build_encoder("cnn", D, in_channels=3, channels=4)
    assert encoder(torch.randn(2, 3, 16, 15)).shape == (2, D)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encoder(torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (2, 4, 7, 9), (1, 1, 2, 3)])
def test_max_pool_2x2_is_nn_max_pool_bit_for_bit_with_and_without_autograd(shape):
    from mmgraph.encoders.cnn import MaxPool2x2

    torch.manual_seed(0)
    x = torch.relu(torch.randn(shape))  # ReLU zeros: ties inside windows, as in the encoders
    ours, reference = MaxPool2x2(), nn.MaxPool2d(2)
    with torch.no_grad():  # the strided-view path (odd sizes: the last row/column dropped, as nn.MaxPool2d does)
        assert torch.equal(ours(x), reference(x))
    with torch.inference_mode():
        assert torch.equal(ours(x), reference(x))
    assert torch.equal(ours(x), reference(x))  # no input needs a gradient: the view path too
    leaf = x.clone().requires_grad_()  # autograd: F.max_pool2d, the same gradient as the module it replaces
    ours(leaf).square().sum().backward()
    expected = x.clone().requires_grad_()
    reference(expected).square().sum().backward()
    assert torch.equal(leaf.grad, expected.grad)


@pytest.mark.dynamo
def test_cnn_encoders_export_with_their_max_pool():
    torch.manual_seed(0)
    for encoder in (build_encoder("spatial_cnn", D, image_size=(12, 12)).eval(),
                    build_encoder("spectrogram_cnn_frames", D, image_size=(12, 12)).eval()):
        x = torch.rand(3, 1, 12, 12)
        with torch.no_grad():
            expected = encoder(x)
        program = torch.export.export(encoder, (x,))
        assert torch.allclose(program.module()(x), expected, atol=1e-6)


def test_spectrogram_cnn_frames_gives_one_node_per_time_column_that_sees_only_nearby_columns():
    torch.manual_seed(0)
    encoder = build_encoder("spectrogram_cnn_frames", D, image_size=(32, 48), stem=2).eval()
    assert encoder.frames == 12  # 48 // stem // 2
    x = torch.randn(3, 1, 32, 48)
    with torch.no_grad():
        frames = encoder(x)
        assert frames.shape == (3, 12, D)
        later = x.clone()
        later[..., 32:] = torch.randn(3, 1, 32, 16)  # new columns 32-47
        changed = (encoder(later) - frames).abs().amax(dim=(0, 2)) > 0  # [frames]
    # frame t covers columns [4t - 6, 4t + 10) (stem 2, two 3x3 convolutions, one 2x2 pool in time): frames
    # 0-5 end before column 32, frames 6-11 reach it
    assert changed.tolist() == [False] * 6 + [True] * 6
    with pytest.raises(ValueError, match=r"x: expected a float spectrogram batch \[B, 1, 32, 48\]"):
        encoder(torch.randn(3, 1, 48, 32))
    with pytest.raises(ValueError, match=r"image_size: expected \(F, T\) with F >= 8 and T >= 4"):
        build_encoder("spectrogram_cnn_frames", D, image_size=(6, 48), stem=2)


def test_spectrogram_cnn_frames_shares_the_spatial_cnn_convolutions():
    """The two encoders build the same convolutions in the same order: one seed gives the same kernels."""
    torch.manual_seed(3)
    frames = build_encoder("spectrogram_cnn_frames", D, image_size=(112, 112), stem=4)
    torch.manual_seed(3)
    spatial = build_encoder("spatial_cnn", D, image_size=(112, 112), stem=4)
    convs = [[m.weight for m in e.features if isinstance(m, nn.Conv2d)] for e in (frames, spatial)]
    assert len(convs[0]) == 3 and all(torch.equal(a, b) for a, b in zip(*convs))
    assert frames.frames == 14 and frames.proj.in_features == 32 * 7


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_on_tokens_and_frames_returns_last_state_or_sequence(cell, bidirectional):
    tokens = build_encoder(cell, D, vocab_size=20, bidirectional=bidirectional)
    assert tokens(torch.randint(0, 20, (3, 6))).shape == (3, D)
    frames = build_encoder(cell, D, in_dim=4, hidden=5, bidirectional=bidirectional, return_sequence=True)
    assert frames(torch.randn(3, 6, 4)).shape == (3, 6, D)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_step_mask_ignores_padding(cell):
    torch.manual_seed(0)
    encoder = build_encoder(cell, D, in_dim=4).eval()
    x = torch.randn(2, 6, 4)
    step_mask = _step_mask([3, 6], 6)
    padded = x.clone()
    padded[0, 3:] = 100.0  # garbage in the padding must not matter
    out = encoder(padded, step_mask)
    assert torch.allclose(out[0], encoder(x[:1, :3])[0], atol=1e-5)  # the state after the 3 real steps
    assert torch.allclose(out[1], encoder(x[1:])[0], atol=1e-5)
    sequence = build_encoder(cell, D, in_dim=4, return_sequence=True)(padded, step_mask)
    assert sequence.shape == (2, 6, D) and sequence[0, 3:].abs().max() == 0


def test_rnn_gives_zero_for_a_sample_without_real_steps_and_rejects_bad_masks():
    encoder = build_encoder("gru", D, vocab_size=10)
    out = encoder(torch.randint(0, 10, (2, 4)), _step_mask([0, 2], 4))
    assert out[0].abs().max() == 0 and out[1].abs().max() > 0
    with pytest.raises(ValueError, match="real steps must come first"):
        encoder(torch.randint(0, 10, (1, 4)), torch.tensor([[False, True, True, True]]))
    with pytest.raises(ValueError, match=r"step_mask: expected a BoolTensor of shape \(2, 4\)"):
        encoder(torch.randint(0, 10, (2, 4)), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\)"):
        encoder(torch.tensor([[3, 10]]))
    with pytest.raises(ValueError, match="LongTensor"):
        encoder(torch.randn(2, 4))
    with pytest.raises(ValueError, match="exactly one"):
        build_encoder("lstm", D, vocab_size=10, in_dim=3)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_conv1d_pools_over_real_steps_or_returns_the_sequence(pool):
    torch.manual_seed(0)
    encoder = build_encoder("conv1d", D, in_dim=4, pool=pool).eval()
    x = torch.randn(2, 7, 4)
    step_mask = _step_mask([4, 7], 7)
    padded = x.clone()
    padded[0, 4:] = 50.0
    out = encoder(padded, step_mask)
    assert out.shape == (2, D)
    assert torch.allclose(out[0], encoder(x[:1, :4])[0], atol=1e-5)  # zero padding == a shorter sequence
    sequence = build_encoder("conv1d", D, in_dim=4, return_sequence=True)(padded, step_mask)
    assert sequence.shape == (2, 7, D) and sequence[0, 4:].abs().max() == 0
    with pytest.raises(ValueError, match="kernel_size"):
        build_encoder("conv1d", D, in_dim=4, kernel_size=4)
    with pytest.raises(ValueError, match=r"FloatTensor\[B, T, 4\]"):
        encoder(torch.randn(2, 7, 3))


def test_reset_parameters_reinitialises_every_encoder():
    for name, kwargs in [("mlp", {"in_dim": 3}), ("cnn", {}), ("gru", {"in_dim": 3}), ("lstm", {"vocab_size": 5}),
                         ("conv1d", {"in_dim": 3}), ("spectrogram_cnn_frames", {"image_size": (8, 8)})]:
        encoder = build_encoder(name, D, **kwargs)
        before = [p.detach().clone() for p in encoder.parameters()]
        torch.manual_seed(123)
        encoder.reset_parameters()
        assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters())), name


def test_encoders_train_end_to_end_on_raw_modalities():
    from mmgraph.data.synthetic import make_raw

    torch.manual_seed(0)
    data = make_raw(n=128, seed=0, image_size=12, seq_len=8)
    batch = data[torch.arange(128)]
    encoders = nn.ModuleDict({"image": build_encoder("cnn", D, channels=4),
                              "text": build_encoder("gru", D, vocab_size=50),
                              "audio": build_encoder("conv1d", D, in_dim=8)})
    head = nn.Linear(3 * D, 4)
    opt = torch.optim.Adam([*encoders.parameters(), *head.parameters()], lr=0.02)
    for _ in range(30):
        logits = head(torch.cat([encoders[m](batch.inputs[m]) for m in encoders], dim=1))
        loss = nn.functional.cross_entropy(logits, batch.targets["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (logits.argmax(1) == batch.targets["label"]).float().mean() > 0.8


def test_from_dataset_completes_spectrogram_cnn_frames_into_temporal_nodes_of_the_gnn(tmp_path):
    """``encoders={"audio": "spectrogram_cnn_frames"}``: the widths and stem are read from the data, the frames are
    temporal nodes of the GNN (temporal edges on by default), and a saved model predicts the same after loading."""
    from mmgraph import FusionModel, MultiModalDataset

    torch.manual_seed(0)
    data = MultiModalDataset({"image": torch.rand(6, 1, 8, 8), "audio": torch.rand(6, 1, 16, 64)},
                             {"label": torch.tensor([0, 1, 2, 0, 1, 2])})
    model = FusionModel.from_dataset(data, "gnn", dim=D, encoders={"audio": "spectrogram_cnn_frames"}, seed=0)
    spec = model.config()["encoders"]["audio"]
    assert spec == {"name": "spectrogram_cnn_frames", "in_channels": 1, "image_size": [16, 64], "stem": 1}
    assert model.config()["fusion_kwargs"]["temporal_window"] > 0
    nodes = model.eval().explain(data[torch.arange(6)].inputs)["node_modality"]
    assert nodes.count("audio") == 32 and nodes.count("image") == 1  # 64 // 2 frames, one image node
    expected = model(data[torch.arange(6)].inputs)["label"]
    loaded = FusionModel.load(model.save(tmp_path / "m.mmgraph"))
    assert torch.equal(loaded(data[torch.arange(6)].inputs)["label"], expected)
    with pytest.raises(ValueError, match=r"encoders\['image'\]: cannot complete 'spectrogram_cnn_frames'"):
        FusionModel.from_dataset(MultiModalDataset({"image": torch.rand(6, 4), "audio": torch.rand(6, 3)},
                                                   {"label": torch.zeros(6, dtype=torch.long)}),
                                 "gnn", encoders={"image": "spectrogram_cnn_frames"})
