"""MultiModalGNN: shapes, backend equivalence, masks, gradients, determinism, validation, learning."""

import copy
import itertools

import pytest
import torch
from torch import nn

from mmgraph import MultiModalGNN, explanation_to_networkx
from mmgraph.gnn.position import TemporalEncoding, sinusoidal

CONVS = ["gcn", "gat", "gatv2", "sage"]
READOUTS = ["mean", "max", "sum", "attention", "concat", "concat_attention"]
BACKENDS = ["dense", "sparse", "pyg", "auto"]
DIMS = {"text": 6, "image": 5, "audio": 3}
SEQ = {"a": 4, "b": 3}


def seq_inputs(batch=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(batch, 6, 4, generator=gen), "b": torch.randn(batch, 3, 3, generator=gen)}


def make_inputs(batch=7, seed=0, dims=DIMS):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, d, generator=gen) for name, d in dims.items()}


def random_mask(batch=7, seed=1, modalities=3):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, modalities, generator=gen) > 0.5
    mask[:, 0] |= ~mask.any(1)  # at least one present modality per sample
    mask[0] = torch.tensor([True] + [False] * (modalities - 1))  # a sample with a single modality
    return mask


def perturbed(model):
    """Move every parameter off its initial value so zero-initialised biases take part in the comparison."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("conv, readout, backend", list(itertools.product(CONVS, READOUTS, BACKENDS)))
def test_output_shape_for_every_conv_readout_backend(conv, readout, backend):
    gnn = MultiModalGNN(DIMS, hidden=8, heads=2, conv=conv, readout=readout, backend=backend)
    out = gnn(make_inputs(), random_mask())
    assert out.shape == (7, 8) and torch.isfinite(out).all()
    assert gnn.out_dim == 8


@pytest.mark.parametrize("conv, readout", list(itertools.product(CONVS, READOUTS)))
@pytest.mark.parametrize("backend", ["sparse", "pyg"])
def test_backend_loads_dense_state_dict_and_matches_it(conv, readout, backend):
    torch.manual_seed(0)
    dense = perturbed(MultiModalGNN(DIMS, hidden=8, heads=2, conv=conv, readout=readout, backend="dense")).eval()
    torch.manual_seed(99)  # different init: only load_state_dict can make them agree
    other = MultiModalGNN(DIMS, hidden=8, heads=2, conv=conv, readout=readout, backend=backend).eval()
    assert list(dense.state_dict()) == list(other.state_dict())
    other.load_state_dict(dense.state_dict())
    inputs = make_inputs()
    for mask in (None, random_mask()):
        torch.testing.assert_close(other(inputs, mask), dense(inputs, mask), atol=1e-4, rtol=0)


@pytest.mark.parametrize("relations", ["star:audio", "chain", [("text", "r1", "image"), ("audio", "r1", "image"),
                                                              ("image", "r2", "text")]])
def test_backends_agree_on_other_relation_sets(relations):
    dense = perturbed(MultiModalGNN(DIMS, hidden=8, heads=2, relations=relations, backend="dense"))
    assert_backends_agree(dense, make_inputs(), random_mask())


@pytest.mark.parametrize("conv, backend", list(itertools.product(CONVS, ["dense", "sparse", "pyg"])))
def test_changing_a_masked_modality_changes_nothing(conv, backend):
    gnn = perturbed(MultiModalGNN(DIMS, hidden=8, heads=2, conv=conv, backend=backend)).eval()
    inputs, mask = make_inputs(), random_mask()
    changed = {k: v.clone() for k, v in inputs.items()}
    for m, name in enumerate(DIMS):
        changed[name][~mask[:, m]] = 1e3 * torch.randn_like(changed[name][~mask[:, m]])
    torch.testing.assert_close(gnn(changed, mask), gnn(inputs, mask), atol=0, rtol=0)


def test_masked_modality_may_hold_nan():
    gnn = MultiModalGNN(DIMS, hidden=8).eval()
    inputs, mask = make_inputs(), random_mask()
    inputs["image"][~mask[:, 1]] = float("nan")
    assert torch.isfinite(gnn(inputs, mask)).all()


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_masked_modality_sends_and_receives_no_messages(conv, backend):
    gnn = MultiModalGNN(DIMS, hidden=8, heads=2, conv=conv, backend=backend)
    mask = torch.tensor([[True, False, True]])
    explanation = gnn.explain(make_inputs(batch=1), mask)
    for coeff in explanation["edges"]:  # [B, R, N, N, K]
        assert (coeff[0, :, 1] == 0).all() and (coeff[0, :, :, 1] == 0).all()
    assert explanation["readout"][0, 1] == 0


def test_mask_given_as_dict_equals_mask_tensor():
    gnn = MultiModalGNN(DIMS, hidden=8).eval()
    inputs, mask = make_inputs(), random_mask()
    as_dict = {name: mask[:, m] for m, name in enumerate(DIMS)}
    torch.testing.assert_close(gnn(inputs, as_dict), gnn(inputs, mask))


def test_stacked_tensor_and_fuse_equal_dict_input():
    dims = {"a": 4, "b": 4, "c": 4}
    gnn = MultiModalGNN(dims, hidden=8).eval()
    nodes = torch.randn(5, 3, 4)
    mask = random_mask(batch=5)
    expected = gnn({k: nodes[:, i] for i, k in enumerate(dims)}, mask)
    torch.testing.assert_close(gnn(nodes, mask), expected)
    torch.testing.assert_close(gnn.fuse(nodes, mask), expected)


@pytest.mark.parametrize("conv, readout", [(c, "attention") for c in CONVS] + [("gat", r) for r in READOUTS])
def test_gradients_reach_every_parameter(conv, readout):
    gnn = MultiModalGNN(DIMS, hidden=8, heads=2, conv=conv, readout=readout, layers=2)
    gnn(make_inputs(), random_mask()).pow(2).sum().backward()
    for name, p in gnn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if readout == "concat" and name.startswith("readout.aggr.gate_nn"):
            # one node per modality: the softmax within each modality is 1, whatever the gate says
            assert (p.grad == 0).all(), name
            continue
        if name == "readout.aggr.gate_nn.bias":
            # one offset added to every score of a softmax changes nothing: its gradient is 0 up to rounding
            assert p.grad.abs().max() < 1e-5, name
            continue
        assert p.grad.abs().sum() > 0, name


def outputs_and_gradients(model, inputs, mask=None, step_mask=None, call=None):
    """The output of ``model`` (run through ``call``, e.g. its compiled version, if given) and the gradients of a
    loss on it w.r.t. every parameter and input."""
    inputs = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    model.zero_grad()
    torch.manual_seed(0)  # the same dropout draw on every path (they draw the same mask from the same seed)
    out = (model if call is None else call)(inputs, mask, step_mask)
    out.pow(2).sum().backward()
    return out.detach(), {name: p.grad for name, p in model.named_parameters()} | {
        f"inputs[{name}]": x.grad for name, x in inputs.items()}


def assert_backends_agree(reference, inputs, mask=None, step_mask=None, backends=("sparse", "pyg")):
    """Every backend in ``backends``, with ``reference``'s weights, gives its output and gradients to 1e-4."""
    expected, expected_grads = outputs_and_gradients(reference, inputs, mask, step_mask)
    for backend in backends:
        other = copy.deepcopy(reference)
        other.backend = backend
        out, grads = outputs_and_gradients(other, inputs, mask, step_mask)
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0, msg=f"{backend}: output")
        assert grads.keys() == expected_grads.keys()
        for name, grad in expected_grads.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-4, rtol=1e-4, msg=f"{backend}: {name}")


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("relations", ["complete", "star:audio"])
def test_backends_agree_on_outputs_and_gradients(conv, relations):
    # the pyg backend runs PyG's own convs under PyG's autograd: the reference for the dense and sparse paths
    dense = perturbed(MultiModalGNN(DIMS, hidden=8, heads=2, conv=conv, relations=relations, backend="dense"))
    for mask in (None, random_mask()):
        assert_backends_agree(dense, make_inputs(), mask)


@pytest.mark.parametrize("readout", READOUTS)
def test_backends_agree_on_gradients_for_every_readout(readout):
    dense = perturbed(MultiModalGNN(DIMS, hidden=8, heads=2, readout=readout, backend="dense"))
    assert_backends_agree(dense, make_inputs(), random_mask())


@pytest.mark.parametrize("conv", CONVS)
def test_backends_agree_on_gradients_with_step_masks(conv):
    dense = perturbed(MultiModalGNN(SEQ, hidden=8, heads=2, conv=conv, temporal_window=2, backend="dense"))
    lengths = torch.tensor([6, 1, 3, 5, 2])
    step_mask = {"a": torch.arange(6).expand(5, 6) < lengths[:, None]}
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, True]])
    assert_backends_agree(dense, seq_inputs(), mask, step_mask)


@pytest.mark.parametrize("conv", CONVS)
def test_backends_agree_on_unaligned_sequences_mixed_with_vectors(conv):
    # 7, 3 and 2 steps: cross-modal edges by relative time position; plus a static vector modality
    dims = {"text": 4, "audio": 3, "video": 5, "image": 2}
    gen = torch.Generator().manual_seed(0)
    inputs = {"text": torch.randn(4, 7, 4, generator=gen), "audio": torch.randn(4, 3, 3, generator=gen),
              "video": torch.randn(4, 2, 5, generator=gen), "image": torch.randn(4, 2, generator=gen)}
    dense = perturbed(MultiModalGNN(dims, hidden=8, heads=2, conv=conv, temporal_window=2, backend="dense"))
    step_mask = {"text": torch.arange(7).expand(4, 7) < torch.tensor([[7], [2], [5], [1]])}
    mask = torch.tensor([[True, True, True, True], [True, False, True, False], [False, True, True, True],
                         [True, True, False, False]])
    for masks in ((None, None), (mask, step_mask)):
        assert_backends_agree(dense, inputs, *masks)


@pytest.mark.parametrize("conv", ["gat", "gcn"])
def test_explanations_agree_between_dense_and_sparse(conv):
    dense = perturbed(MultiModalGNN(SEQ, hidden=8, heads=2, conv=conv, temporal_window=1, backend="dense"))
    sparse = copy.deepcopy(dense)
    sparse.backend = "sparse"
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, True]])
    step_mask = {"a": torch.arange(6).expand(5, 6) < torch.tensor([[6], [1], [3], [5], [2]])}
    expected, explained = (model.explain(seq_inputs(), mask, step_mask) for model in (dense, sparse))
    assert dense.training and sparse.training  # explain ran in eval mode (no dropout draw) and restored the mode
    for layer, (want, got) in enumerate(zip(expected["edges"], explained["edges"])):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"layer {layer}")
    torch.testing.assert_close(explained["readout"], expected["readout"], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- edge pruning (MTAG-style)
def _pruned_pair(conv, pruning=0.5, layers=3):
    dense = perturbed(MultiModalGNN(SEQ, hidden=8, heads=2, conv=conv, layers=layers, temporal_window=2,
                                    edge_pruning=pruning, backend="dense"))
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, True]])
    step_mask = {"a": torch.arange(6).expand(5, 6) < torch.tensor([[6], [1], [3], [5], [4]])}
    return dense, mask, step_mask


@pytest.mark.parametrize("conv", ["gat", "gatv2"])
def test_edge_pruning_agrees_between_dense_and_sparse(conv):
    dense, mask, step_mask = _pruned_pair(conv)
    assert_backends_agree(dense, seq_inputs(), mask, step_mask, backends=("sparse",))
    assert_backends_agree(dense, seq_inputs(), backends=("sparse",))
    sparse = copy.deepcopy(dense)
    sparse.backend = "sparse"
    expected, explained = (model.explain(seq_inputs(), mask, step_mask) for model in (dense, sparse))
    for layer, (want, got) in enumerate(zip(expected["edges"], explained["edges"])):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"layer {layer}")


@pytest.mark.parametrize("backend", ["dense", "sparse"])
@pytest.mark.parametrize("pruning", [0.3, 0.5, 0.7])
def test_edge_pruning_keeps_each_nodes_highest_attention_in_edges(backend, pruning):
    model, mask, step_mask = _pruned_pair("gat", pruning)
    model.backend = backend
    edges = [e.mean(-1) for e in model.explain(seq_inputs(), mask, step_mask)["edges"]]  # [B, R, N, N] per layer
    first_kept, first_had = edges[1] > 0, edges[0] > 0
    assert (first_kept.sum(-1) < first_had.sum(-1)).any(), "nothing was pruned"
    for before, after in zip(edges, edges[1:]):
        kept, had = after > 0, before > 0
        assert (kept <= had).all(), "a pruned layer passes a message over an edge the layer before did not have"
        degree = had.sum(-1)
        want = torch.floor(degree * (1 - pruning) + 1e-9).long().clamp(min=1).minimum(degree)
        assert torch.equal(kept.sum(-1), want), "each node keeps max(1, floor((1 - pruning) * its in-degree)) edges"
        lowest_kept = before.masked_fill(~kept, float("inf")).amin(-1)
        highest_dropped = before.masked_fill(kept | ~had, float("-inf")).amax(-1)
        assert (lowest_kept >= highest_dropped).all(), "an edge of lower attention was kept over a higher one"


def test_edge_pruning_changes_the_output_and_zero_pruning_changes_nothing():
    model, mask, step_mask = _pruned_pair("gat")
    unpruned = copy.deepcopy(model)
    unpruned.edge_pruning = 0.0
    reference = MultiModalGNN(SEQ, hidden=8, heads=2, layers=3, temporal_window=2)
    reference.load_state_dict(model.state_dict())  # the same parameters: pruning adds none
    for module in (model, unpruned, reference):
        module.eval()  # no dropout draw
    torch.testing.assert_close(unpruned(seq_inputs(), mask, step_mask), reference(seq_inputs(), mask, step_mask))
    assert not torch.allclose(model(seq_inputs(), mask, step_mask), reference(seq_inputs(), mask, step_mask))


def test_edge_pruning_is_refused_on_the_pyg_path():
    model, _, _ = _pruned_pair("gat")
    model.backend = "pyg"
    with pytest.raises(ValueError, match="pyg.*edge_pruning"):
        model(seq_inputs())


def test_auto_backend_takes_dense_on_small_graphs_and_sparse_on_long_sequences():
    gnn = MultiModalGNN(SEQ, hidden=8, temporal_window=2)
    assert gnn.backend == "auto"
    assert gnn.message_path(gnn.graph.layout([1, 1])) == "dense"
    assert gnn.message_path(gnn.graph.layout([64, 64], temporal_window=2)) == "sparse"
    gnn.backend = "pyg"
    assert gnn.message_path(gnn.graph.layout([64, 64], temporal_window=2)) == "pyg"


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_int8_dynamic_quantisation_runs_every_linear_as_a_module(backend):
    gnn = perturbed(MultiModalGNN(SEQ, hidden=16, heads=2, temporal_window=1, backend=backend)).eval()
    quantised = torch.ao.quantization.quantize_dynamic(gnn, {nn.Linear}, dtype=torch.qint8)
    assert isinstance(quantised.input_proj["a"], torch.ao.nn.quantized.dynamic.Linear)
    out, expected = quantised(seq_inputs()), gnn(seq_inputs())
    assert not torch.equal(out, expected)  # the int8 modules ran
    torch.testing.assert_close(out, expected, atol=0.1, rtol=0)


@pytest.mark.dynamo
def test_torch_export_of_a_fresh_model_matches_eager():
    gnn = perturbed(MultiModalGNN(DIMS, hidden=8, heads=2)).eval()
    inputs, mask = make_inputs(), random_mask()
    exported = torch.export.export(gnn, (inputs, mask))  # before any eager call: no data-dependent guard
    torch.testing.assert_close(exported.module()(inputs, mask), gnn(inputs, mask), atol=1e-6, rtol=0)
    sequences = MultiModalGNN(SEQ, hidden=8, temporal_window=1)
    with pytest.raises(RuntimeError, match="run one eager forward with inputs of these lengths"):
        torch.export.export(sequences, (seq_inputs(),))


@pytest.mark.dynamo
def test_compiled_training_step_matches_eager():
    # one compile (~40 s on 2 cores) on the sparse path; the dense path shares every other op
    eager = perturbed(MultiModalGNN(SEQ, hidden=8, heads=2, temporal_window=1, backend="sparse"))
    compiled = copy.deepcopy(eager)
    inputs, step_mask = seq_inputs(), {"a": torch.arange(6).expand(5, 6) < 4}
    expected, expected_grads = outputs_and_gradients(eager, inputs, step_mask=step_mask)
    out, grads = outputs_and_gradients(compiled, inputs, step_mask=step_mask, call=torch.compile(compiled))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_dropout_acts_in_training_only():
    gnn = perturbed(MultiModalGNN(DIMS, hidden=16, dropout=0.5))
    inputs = make_inputs()
    torch.manual_seed(0)
    first = gnn(inputs)
    torch.manual_seed(1)
    assert not torch.allclose(first, gnn(inputs))  # a different dropout draw
    gnn.eval()
    torch.testing.assert_close(gnn(inputs), gnn(inputs), atol=0, rtol=0)


def test_backends_draw_the_same_dropout_mask_from_the_same_seed():
    dense = perturbed(MultiModalGNN(DIMS, hidden=16, heads=2, dropout=0.5))
    pyg = MultiModalGNN(DIMS, hidden=16, heads=2, dropout=0.5, backend="pyg")
    pyg.load_state_dict(dense.state_dict())
    inputs, mask = make_inputs(), random_mask()
    outputs = []
    for model in (dense, pyg):
        torch.manual_seed(3)
        outputs.append(model.train()(inputs, mask))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)


def test_same_seed_gives_same_model_and_output():
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        gnn = MultiModalGNN(DIMS, hidden=8, dropout=0.3)
        torch.manual_seed(8)
        outputs.append(gnn(make_inputs(), random_mask()))  # train mode: dropout draws from the seeded RNG
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("backend", ["dense", "sparse", "pyg"])
def test_explain_returns_attention_rows_that_sum_to_one_and_modality_weights(backend):
    gnn = MultiModalGNN(DIMS, hidden=8, heads=2, conv="gat", readout="attention", backend=backend)
    mask = random_mask()
    explanation = gnn.explain(make_inputs(), mask)
    coeff = explanation["edges"][0][:, 0]  # relation "cross": [B, N, N, K]
    row_sums = coeff.sum(2)  # over sources
    torch.testing.assert_close(row_sums[mask], torch.ones_like(row_sums[mask]))
    weights = torch.stack(list(explanation["modality_weights"].values()), 1)
    torch.testing.assert_close(weights.sum(1), torch.ones(7))
    assert (weights[~mask] == 0).all()
    graph = explanation_to_networkx(explanation, sample=0)
    assert set(graph.nodes) == {"text"}  # sample 0 has only text present
    assert graph.nodes["text"]["modality"] == "text"


def test_explain_without_a_mask_has_a_sample_major_node_mask_and_named_nodes():
    gnn = MultiModalGNN(DIMS, hidden=8, heads=2)
    explanation = gnn.explain(make_inputs())  # B = 7 samples, N = 3 nodes
    assert explanation["node_mask"].shape == (7, len(DIMS)) and explanation["node_mask"].all()
    graph = explanation_to_networkx(explanation, sample=6)
    assert {name: data["modality"] for name, data in graph.nodes(data=True)} == {m: m for m in DIMS}


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(conv="gin"), ValueError, "conv"),
    (dict(readout="median"), ValueError, "readout"),
    (dict(relations="ring"), ValueError, "relations"),
    (dict(relations=[("text", "r", "video")]), ValueError, "video"),
    (dict(hidden=10, heads=4, conv="gat"), ValueError, "divisible by heads"),
    (dict(backend="jax"), ValueError, "backend"),
    (dict(layers=-1), ValueError, "layers"),
    (dict(edge_pruning=1.0), ValueError, "edge_pruning"),
    (dict(edge_pruning=-0.1), ValueError, "edge_pruning"),
    (dict(edge_pruning=0.5, conv="gcn"), ValueError, "edge_pruning.*conv='gcn'"),
])
def test_bad_constructor_arguments_raise(kwargs, error, words):
    with pytest.raises(error, match=words):
        MultiModalGNN(DIMS, **kwargs)


def test_bad_modalities_raise():
    with pytest.raises(ValueError, match="modalities\\['text'\\]"):
        MultiModalGNN({"text": 0})
    with pytest.raises(TypeError, match="modalities"):
        MultiModalGNN(["text", "image"])


def _bad_inputs():
    good = make_inputs()
    cases = {
        "missing key": ({k: v for k, v in good.items() if k != "audio"}, None, ValueError, "missing \\['audio'\\]"),
        "unknown key": ({**good, "video": torch.randn(7, 2)}, None, ValueError, "unknown \\['video'\\]"),
        "wrong dim": ({**good, "text": torch.randn(7, 9)}, None, ValueError, "inputs\\['text'\\].*\\[B, 6\\].*9"),
        "batch sizes": ({**good, "image": torch.randn(6, 5)}, None, ValueError, "batch sizes disagree"),
        "integer dtype": ({**good, "audio": torch.ones(7, 3, dtype=torch.long)}, None, TypeError, "floating"),
        "nan": ({**good, "text": good["text"].clone().fill_(float("nan"))}, None, ValueError, "NaN"),
        "inf": ({**good, "text": good["text"].clone().fill_(float("inf"))}, None, ValueError, "Inf"),
        "mask shape": (good, torch.ones(7, 2, dtype=torch.bool), ValueError, "mask: expected shape \\(7, 3\\)"),
        "mask dtype": (good, torch.ones(7, 3), TypeError, "torch.bool"),
        "all masked": (good, torch.zeros(7, 3, dtype=torch.bool), ValueError, "every modality"),
        "mask key": (good, {"video": torch.ones(7, dtype=torch.bool)}, ValueError, "unknown modality keys"),
        "empty batch": ({k: v[:0] for k, v in good.items()}, None, ValueError, "empty batch"),
        "not a dict": ([1, 2], None, TypeError, "inputs"),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize("inputs, mask, error, words", _bad_inputs())
def test_bad_inputs_raise_clear_errors(inputs, mask, error, words):
    gnn = MultiModalGNN(DIMS, hidden=8)
    with pytest.raises(error, match=words):
        gnn(inputs, mask)


# ---------------------------------------------------------------------- learning
def make_interaction(n, gen):
    """Label = XOR of one sign per modality: each modality alone is at chance."""
    text, image = torch.randn(n, 4, generator=gen), torch.randn(n, 4, generator=gen)
    return {"text": text, "image": image}, ((text[:, 0] > 0) ^ (image[:, 0] > 0)).long()


def train_and_test(gnn, train_x, train_y, test_x, test_y, steps, gen) -> float:
    """Adam on mini-batches of 128 with a linear head; returns the test accuracy."""
    head = nn.Linear(gnn.out_dim, 2)
    optimiser = torch.optim.Adam([*gnn.parameters(), *head.parameters()], lr=5e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(train_y), (128,), generator=gen)
        loss = nn.functional.cross_entropy(head(gnn({k: v[idx] for k, v in train_x.items()})), train_y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    gnn.eval()
    with torch.no_grad():
        return (head(gnn(test_x)).argmax(1) == test_y).float().mean().item()


@pytest.mark.parametrize("conv", ["gat", "gcn"])
def test_learns_cross_modal_interaction_task(conv):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    train_x, train_y = make_interaction(1024, gen)
    test_x, test_y = make_interaction(512, gen)
    gnn = MultiModalGNN({"text": 4, "image": 4}, hidden=32, heads=4, conv=conv)
    assert train_and_test(gnn, train_x, train_y, test_x, test_y, steps=250, gen=gen) >= 0.9


# ---------------------------------------------------------------------- temporal graphs
@pytest.mark.parametrize("conv", CONVS)
def test_temporal_backends_agree_with_padding_and_masks(conv):
    dense = perturbed(MultiModalGNN(SEQ, hidden=8, heads=2, conv=conv, temporal_window=2, backend="dense")).eval()
    lengths = torch.tensor([6, 1, 3, 5, 2])
    step_mask = {"a": torch.arange(6).expand(5, 6) < lengths[:, None]}
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, True]])
    assert dense(seq_inputs(), mask, step_mask).shape == (5, 8)
    for other in ("sparse", "pyg"):
        model = copy.deepcopy(dense)
        model.backend = other
        torch.testing.assert_close(model(seq_inputs(), mask, step_mask), dense(seq_inputs(), mask, step_mask),
                                   atol=1e-4, rtol=0, msg=other)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_padded_steps_change_nothing(backend):
    gnn = perturbed(MultiModalGNN(SEQ, hidden=8, temporal_window=1, backend=backend)).eval()
    inputs = seq_inputs()
    step_mask = {"a": torch.arange(6).expand(5, 6) < 4}
    padded = {k: v.clone() for k, v in inputs.items()}
    padded["a"][:, 4:] = 1e3
    torch.testing.assert_close(gnn(padded, step_mask=step_mask), gnn(inputs, step_mask=step_mask), atol=0, rtol=0)


def test_temporal_window_adds_prev_next_relations_and_parameters():
    static = MultiModalGNN(SEQ, hidden=8)
    temporal = MultiModalGNN(SEQ, hidden=8, temporal_window=1)
    assert temporal.relation_types == ("cross", "next", "prev")
    assert sum(p.numel() for p in temporal.parameters()) > sum(p.numel() for p in static.parameters())


def test_fuse_accepts_sequence_nodes_with_step_mask():
    gnn = MultiModalGNN({"a": 4, "b": 4}, hidden=8, temporal_window=1).eval()
    nodes = torch.randn(3, 2, 5, 4)
    mask = torch.ones(3, 2, 5, dtype=torch.bool)
    mask[0, 1, 2:] = False
    step_mask = {"a": mask[:, 0], "b": mask[:, 1]}
    expected = gnn({"a": nodes[:, 0], "b": nodes[:, 1]}, step_mask=step_mask)
    torch.testing.assert_close(gnn.fuse(nodes, mask), expected)


# ---------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["dense", "sparse", "pyg"])
def test_runs_on_cuda_and_matches_cpu(backend):
    gnn = perturbed(MultiModalGNN(DIMS, hidden=8, backend=backend)).eval()
    inputs, mask = make_inputs(), random_mask()
    expected = gnn(inputs, mask)
    gnn = gnn.cuda()
    out = gnn({k: v.cuda() for k, v in inputs.items()}, mask.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=1e-4)


def make_order_task(n, steps, gen):
    """Each modality has one event (a fixed pattern added at a random step); label = a's event precedes b's.

    Each modality alone, and any model blind to order across modalities, is at chance.
    """
    pattern_a, pattern_b = torch.randn(4, generator=gen), torch.randn(4, generator=gen)
    a, b = 0.3 * torch.randn(n, steps, 4, generator=gen), 0.3 * torch.randn(n, steps, 4, generator=gen)
    t_a = torch.randint(0, steps, (n,), generator=gen)
    t_b = (t_a + torch.randint(1, steps, (n,), generator=gen)) % steps  # never the same step
    a[torch.arange(n), t_a] += pattern_a
    b[torch.arange(n), t_b] += pattern_b
    return {"a": a, "b": b}, (t_a < t_b).long()


def _fit_order_task(temporal_window, **options):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    inputs, labels = make_order_task(1536, 6, gen)  # one call: train and test share the event patterns
    train_x, train_y = {k: v[:1024] for k, v in inputs.items()}, labels[:1024]
    test_x, test_y = {k: v[1024:] for k, v in inputs.items()}, labels[1024:]
    gnn = MultiModalGNN({"a": 4, "b": 4}, hidden=16, heads=4, layers=2, temporal_window=temporal_window, **options)
    return train_and_test(gnn, train_x, train_y, test_x, test_y, steps=80, gen=gen)


def test_temporal_edges_learn_cross_modal_order_that_a_static_graph_cannot():
    # nodes without positions (the defaults before issue 21): only the temporal edges can carry order
    blind = {"positional": None, "readout": "attention"}
    with_time = _fit_order_task(temporal_window=5, **blind)
    without_time = _fit_order_task(temporal_window=0, **blind)
    assert with_time >= 0.9
    assert without_time < 0.7
    # with the default positions and modality-keeping readout, the order is readable without temporal edges too
    assert _fit_order_task(temporal_window=0) >= 0.9


# ---------------------------------------------------------------------- issue 21: positions, context, readouts, gate
# each option alone and all together, on unaligned sequences (6 and 3 steps) mixed with a static modality
NEW_OPTIONS = [dict(positional="sinusoidal"), dict(positional="learned"),
               dict(positional="sinusoidal", positional_time="relative"),
               dict(positional="learned", positional_time="relative", max_positions=12), dict(context="conv"),
               dict(readout="concat"), dict(gate=True),
               dict(positional="sinusoidal", context="conv", readout="concat", gate=True)]
MIXED = {"a": 4, "b": 3, "v": 5}


def mixed_inputs(batch=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(batch, 6, 4, generator=gen), "b": torch.randn(batch, 3, 3, generator=gen),
            "v": torch.randn(batch, 5, generator=gen)}


MIXED_MASK = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [True, True, False],
                           [True, True, True]])
MIXED_STEPS = {"a": torch.arange(6).expand(5, 6) < torch.tensor([[6], [1], [3], [5], [2]])}


@pytest.mark.parametrize("conv", ["gat", "gcn"])
@pytest.mark.parametrize("options", NEW_OPTIONS, ids=str)
def test_backends_agree_on_every_new_option(options, conv):
    dense = perturbed(MultiModalGNN(MIXED, hidden=8, heads=2, conv=conv, temporal_window=2, backend="dense",
                                    **options))
    for masks in ((None, None), (MIXED_MASK, MIXED_STEPS)):
        assert_backends_agree(dense, mixed_inputs(), *masks)


@pytest.mark.parametrize("backend", ["dense", "sparse", "pyg"])
@pytest.mark.parametrize("options", NEW_OPTIONS, ids=str)
def test_new_options_respect_masks_and_padding(options, backend):
    gnn = perturbed(MultiModalGNN(MIXED, hidden=8, heads=2, temporal_window=2, backend=backend, **options)).eval()
    inputs = mixed_inputs()
    changed = {k: v.clone() for k, v in inputs.items()}
    for m, name in enumerate(MIXED):  # a masked modality and the padded steps hold anything
        changed[name][~MIXED_MASK[:, m]] = 1e3
    changed["a"][~MIXED_STEPS["a"]] = -1e3
    torch.testing.assert_close(gnn(changed, MIXED_MASK, MIXED_STEPS), gnn(inputs, MIXED_MASK, MIXED_STEPS),
                               atol=0, rtol=0)


@pytest.mark.parametrize("options", NEW_OPTIONS, ids=str)
def test_new_options_reach_every_parameter_and_are_deterministic(options):
    torch.manual_seed(0)
    gnn = MultiModalGNN(MIXED, hidden=8, heads=2, temporal_window=1, **options)
    gnn(mixed_inputs(), MIXED_MASK, MIXED_STEPS).pow(2).sum().backward()
    for name, p in gnn.named_parameters():
        if name.startswith("context.convs.v."):  # "v" is a vector here: no steps to convolve
            assert p.grad is None
            continue
        if name == "readout.aggr.gate_nn.bias":  # softmax shift invariance: 0 up to rounding (see above)
            assert p.grad.abs().max() < 1e-5, name
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    torch.manual_seed(0)
    again = MultiModalGNN(MIXED, hidden=8, heads=2, temporal_window=1, **options)
    for (name, p), q in zip(gnn.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name


def test_options_off_add_no_parameters_and_positions_leave_static_modalities_alone():
    torch.manual_seed(0)
    off = MultiModalGNN(DIMS, hidden=8, heads=2, readout="attention", positional=None)
    assert off.positional is None and off.context is None and not off.gate
    assert not any(k.startswith(("positional", "context")) or ".gate." in k or "readout.project" in k
                   or "readout.missing" in k for k in off.state_dict())
    torch.manual_seed(0)
    default = MultiModalGNN(DIMS, hidden=8, heads=2, readout="attention").eval()  # positional by default
    assert default.positional_type == "sinusoidal" and MultiModalGNN(DIMS).readout_type == "concat"
    torch.testing.assert_close(default(make_inputs()), off.eval()(make_inputs()), atol=0, rtol=0)


def test_sinusoidal_rows_have_unit_norm_and_relative_time_aligns_streams_of_different_lengths():
    torch.testing.assert_close(sinusoidal(torch.arange(9), 16).norm(dim=-1), torch.ones(9))
    assert sinusoidal(torch.arange(3), 7).shape == (3, 7)
    for kind in ("sinusoidal", "learned"):
        encoding = TemporalEncoding(kind, 8, time="relative", max_positions=16)
        short, long = encoding(4, torch.device("cpu")), encoding(8, torch.device("cpu"))
        torch.testing.assert_close(long[::2], short)  # step t of 4 and step 2t of 8: the same relative time
        assert not torch.allclose(long[1], long[0])
        by_step = TemporalEncoding(kind, 8, time="step", max_positions=16)
        torch.testing.assert_close(by_step(8, torch.device("cpu"))[:4], by_step(4, torch.device("cpu")))


def test_learned_positions_refuse_sequences_longer_than_the_table():
    gnn = MultiModalGNN({"a": 4}, hidden=8, positional="learned", max_positions=5)
    with pytest.raises(ValueError, match="max_positions=5"):
        gnn({"a": torch.randn(2, 6, 4)})


def test_concat_readout_keeps_modality_identity_and_fills_missing_modalities():
    gnn = perturbed(MultiModalGNN(MIXED, hidden=8, heads=2, temporal_window=1, readout="concat")).eval()
    explanation = gnn.explain(mixed_inputs(), MIXED_MASK, MIXED_STEPS)
    weights = torch.stack(list(explanation["modality_weights"].values()), 1)  # [B, M]
    # each present modality's nodes share a weight of 1; a missing modality none
    torch.testing.assert_close(weights, MIXED_MASK.to(weights.dtype))
    # swapping two modalities' states changes a concat readout (it knows which is which), not a mean readout
    dims = {"x": 4, "y": 4}
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    for readout, differs in (("concat", True), ("mean", False)):
        model = perturbed(MultiModalGNN(dims, hidden=8, layers=0, readout=readout)).eval()
        model.input_proj["y"].load_state_dict(model.input_proj["x"].state_dict())
        swapped = model({"x": y, "y": x})
        assert (not torch.allclose(swapped, model({"x": x, "y": y}), atol=1e-5)) == differs, readout


def test_gate_is_a_multiplicative_interaction_of_receiver_and_message():
    gnn = perturbed(MultiModalGNN(DIMS, hidden=8, heads=2, layers=1, gate=True)).eval()
    layer = gnn.layers[0]
    h, message = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.bias.fill_(-30.0)  # gate shut: the update ignores the messages
    torch.testing.assert_close(layer.update(h, message, None), layer.update(h, torch.zeros_like(message), None))


def make_position_task(n, steps, gen):
    """One modality with one event (a fixed pattern at a random step); label = the event is in the first half.

    A graph without temporal edges and without positions is blind to the step: at chance."""
    pattern = torch.randn(4, generator=gen)
    x = 0.3 * torch.randn(n, steps, 4, generator=gen)
    t = torch.randint(0, steps, (n,), generator=gen)
    x[torch.arange(n), t] += pattern
    return {"a": x}, (t < steps // 2).long()


@pytest.mark.parametrize("positional", [None, "sinusoidal", "learned"])
def test_positional_encodings_make_order_readable(positional):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    inputs, labels = make_position_task(1536, 6, gen)
    train_x, train_y = {k: v[:1024] for k, v in inputs.items()}, labels[:1024]
    test_x, test_y = {k: v[1024:] for k, v in inputs.items()}, labels[1024:]
    gnn = MultiModalGNN({"a": 4}, hidden=16, heads=4, layers=1, temporal_window=0, positional=positional)
    accuracy = train_and_test(gnn, train_x, train_y, test_x, test_y, steps=160, gen=gen)
    if positional is None:
        assert accuracy < 0.65
    else:
        assert accuracy >= 0.9


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(positional="rotary"), ValueError, "positional"),
    (dict(positional="learned", positional_time="absolute"), ValueError, "positional_time"),
    (dict(max_positions=0), ValueError, "max_positions"),
    (dict(context="lstm"), ValueError, "context"),
    (dict(gate="yes"), TypeError, "gate"),
])
def test_bad_new_options_raise(kwargs, error, words):
    with pytest.raises(error, match=words):
        MultiModalGNN(DIMS, **kwargs)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_int8_quantisation_and_export_with_every_new_option(backend):
    options = NEW_OPTIONS[-1]
    gnn = perturbed(MultiModalGNN(MIXED, hidden=16, heads=2, temporal_window=1, backend=backend, **options)).eval()
    inputs = mixed_inputs()
    quantised = torch.ao.quantization.quantize_dynamic(gnn, {nn.Linear}, dtype=torch.qint8)
    assert isinstance(quantised.layers[0].gate, torch.ao.nn.quantized.dynamic.Linear)
    assert all(isinstance(getattr(quantised.readout.project, name), torch.ao.nn.quantized.dynamic.Linear)
               for name in ("linear", "hidden", "out"))
    out, expected = quantised(inputs, MIXED_MASK), gnn(inputs, MIXED_MASK)
    assert not torch.equal(out, expected)
    torch.testing.assert_close(out, expected, atol=0.15, rtol=0)


@pytest.mark.dynamo
def test_torch_export_with_every_new_option_matches_eager():
    gnn = perturbed(MultiModalGNN(MIXED, hidden=8, heads=2, temporal_window=1, **NEW_OPTIONS[-1])).eval()
    inputs = mixed_inputs()
    expected = gnn(inputs, MIXED_MASK, MIXED_STEPS)  # one eager forward builds the layout of these lengths
    exported = torch.export.export(gnn, (inputs, MIXED_MASK, MIXED_STEPS))
    torch.testing.assert_close(exported.module()(inputs, MIXED_MASK, MIXED_STEPS), expected, atol=1e-6, rtol=0)


def test_new_options_survive_save_and_load(tmp_path):
    from mmgraph.models import FusionModel

    encoders = {"a": {"name": "mlp", "in_dim": 3}, "b": {"name": "mlp", "in_dim": 5}}
    options = {"positional": "learned", "positional_time": "relative", "max_positions": 16, "context": "conv",
               "readout": "concat", "gate": True}
    model = perturbed(FusionModel(encoders, "gnn", {"label": 2}, dim=8,
                                  fusion_kwargs={"heads": 2, "temporal_window": 1, **options})).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = {"a": torch.randn(4, 9, 3, generator=gen), "b": torch.randn(4, 5, 5, generator=gen)}
    loaded = FusionModel.load(model.save(tmp_path / "m.pt"))
    assert {k: loaded.config()["fusion_kwargs"][k] for k in options} == options
    torch.testing.assert_close(loaded(inputs)["label"], model(inputs)["label"], atol=0, rtol=0)


def test_a_format_1_model_file_loads_with_the_gnn_defaults_it_was_written_with(tmp_path):
    # a file written before issue 21 (format 1) recorded only the GNN settings its user gave; the defaults it used
    # then (attention readout, no positions) must come back, whatever today's defaults are
    from mmgraph.fusion.graph import FORMAT_1_GNN_DEFAULTS
    from mmgraph.io import save_file
    from mmgraph.models import MODEL_FORMAT, FusionModel

    encoders = {"a": {"name": "mlp", "in_dim": 3}, "b": {"name": "mlp", "in_dim": 5}}
    given = {"heads": 2, "temporal_window": 1}
    old = perturbed(FusionModel(encoders, "gnn", {"label": 2}, dim=8,
                                fusion_kwargs={**given, **FORMAT_1_GNN_DEFAULTS})).eval()
    payload = {"format": 1, "config": {**old.config(), "fusion_kwargs": given},
               "state_dict": old.state_dict(), "versions": {"mmgraph": "0.1.0", "torch": str(torch.__version__)}}
    path = save_file(tmp_path / "old.pt", payload, kind="model")
    gen = torch.Generator().manual_seed(0)
    inputs = {"a": torch.randn(4, 9, 3, generator=gen), "b": torch.randn(4, 9, 5, generator=gen)}
    loaded = FusionModel.load(path)
    assert loaded.fusion.gnn.readout_type == "attention" and loaded.fusion.gnn.positional is None
    torch.testing.assert_close(loaded(inputs)["label"], old(inputs)["label"], atol=0, rtol=0)
    # today's defaults differ from those (else there is nothing to keep), and a new file keeps today's
    new = FusionModel(encoders, "gnn", {"label": 2}, dim=8, fusion_kwargs=given).eval()
    assert (new.fusion.gnn.readout_type, new.fusion.gnn.positional_type) != ("attention", None)
    reloaded = FusionModel.load(new.save(tmp_path / "new.pt"))
    assert MODEL_FORMAT == 2 and reloaded.fusion.gnn.readout_type == new.fusion.gnn.readout_type
    torch.testing.assert_close(reloaded(inputs)["label"], new(inputs)["label"], atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["dense", "sparse", "pyg"])
def test_concat_attention_readout_explains_with_the_all_node_attention(backend):
    gnn = perturbed(MultiModalGNN(MIXED, hidden=8, heads=2, temporal_window=1, backend=backend,
                                  readout="concat_attention"))
    explanation = gnn.explain(mixed_inputs(), MIXED_MASK, MIXED_STEPS)
    weights = torch.stack(list(explanation["modality_weights"].values()), 1)  # [B, M]
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    assert (weights[~MIXED_MASK] == 0).all()


def _fit_xor(gnn: nn.Module, steps: int = 300) -> float:
    """Train ``gnn`` + a linear head, full batch, on label = XOR of the signs of two modalities; train accuracy."""
    gen = torch.Generator().manual_seed(0)
    x = {"a": torch.randn(256, 2, generator=gen), "b": torch.randn(256, 2, generator=gen)}
    y = ((x["a"][:, 0] > 0) ^ (x["b"][:, 0] > 0)).long()
    head = nn.Linear(16, 2)
    opt = torch.optim.Adam([*gnn.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(head(gnn(x)), y).backward()
        opt.step()
    return (head(gnn(x)).argmax(1) == y).float().mean().item()


def test_the_concat_readout_represents_an_interaction_without_message_passing():
    """Issue 21, root cause 5 (docs/design.md): a linear readout (and a linear head) leave every interaction between
    modalities to the GNN layers. With ``layers=0`` the concat readout alone must still learn an XOR of two
    modalities; its linear path alone (the readout before ConcatProjection) cannot: it stays near chance."""
    torch.manual_seed(0)
    gnn = MultiModalGNN({"a": 2, "b": 2}, hidden=16, layers=0)
    assert _fit_xor(gnn) >= 0.9
    torch.manual_seed(0)
    linear = MultiModalGNN({"a": 2, "b": 2}, hidden=16, layers=0)
    for param in linear.readout.project.out.parameters():  # the readout as it was: its linear path only
        param.data.zero_()
        param.requires_grad_(False)
    assert _fit_xor(linear) <= 0.7
