"""ModalityGraph: presets, custom relations, layouts, and vectorised batch construction."""

import networkx as nx
import pytest
import torch

from mmgraph import ModalityGraph

MODS = ["text", "image", "audio"]


def test_complete_preset_links_every_ordered_pair_under_one_relation():
    graph = ModalityGraph(MODS, "complete")
    assert graph.relation_types == ("cross",)
    assert {(s, d) for s, _, d in graph.relations} == {(a, b) for a in MODS for b in MODS if a != b}


def test_star_preset_uses_named_centre_in_both_directions():
    graph = ModalityGraph(MODS, "star", centre="image")
    assert set(graph.relations) == {("text", "to_centre", "image"), ("audio", "to_centre", "image"),
                                    ("image", "from_centre", "text"), ("image", "from_centre", "audio")}
    assert ModalityGraph(MODS, "star:image").relations == graph.relations


def test_chain_preset_follows_modality_order():
    graph = ModalityGraph(MODS, "chain")
    assert ("text", "forward", "image") in graph.relations and ("audio", "backward", "image") in graph.relations
    assert ("text", "forward", "audio") not in graph.relations


def test_networkx_digraph_and_round_trip():
    digraph = nx.DiGraph()
    digraph.add_edge("text", "image", relation="describes")
    digraph.add_edge("audio", "image")
    graph = ModalityGraph(MODS, digraph)
    assert set(graph.relations) == {("text", "describes", "image"), ("audio", "cross", "image")}
    back = graph.to_networkx()
    assert set(back.nodes) == set(MODS)
    assert {(u, v, d["relation"]) for u, v, d in back.edges(data=True)} == {
        ("text", "image", "describes"), ("audio", "image", "cross")}


@pytest.mark.parametrize("relations, error, words", [
    ("ring", ValueError, "unknown preset"),
    ([("text", "r", "video")], ValueError, "unknown modality 'video'"),
    ([("text", "r")], TypeError, "triples"),
    ([("text", "next", "image")], ValueError, "reserved"),
    ("star:video", ValueError, "centre"),
    (nx.Graph([("text", "image")]), TypeError, "DiGraph"),
])
def test_bad_relations_raise_clear_errors(relations, error, words):
    with pytest.raises(error, match=words):
        ModalityGraph(MODS, relations)


def test_duplicate_modalities_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        ModalityGraph(["a", "a"])


def test_layout_has_self_loops_only_on_destination_nodes():
    graph = ModalityGraph(MODS, [("text", "r", "image")])
    layout = graph.layout()
    adjacency = layout.adjacency[0]  # [N, N] (dst, src)
    assert adjacency[1, 0] and adjacency[1, 1]  # text -> image and image's self-loop
    assert not adjacency[0].any() and not adjacency[2].any()  # text and audio receive nothing


def test_temporal_layout_joins_steps_within_window_and_aligns_modalities():
    graph = ModalityGraph(["a", "b"], "complete")
    layout = graph.layout(steps=(4, 2), temporal_window=1)
    assert layout.relation_types == ("cross", "next", "prev")
    nxt = layout.adjacency[1]
    assert nxt[1, 0] and not nxt[0, 1] and not nxt[2, 0]  # a[0] -> a[1] only, window 1
    cross = layout.adjacency[0]
    # a has 4 steps, b has 2: b[0] covers a[0], a[1]; b[1] covers a[2], a[3]
    assert cross[4, 0] and cross[4, 1] and not cross[4, 2]
    assert cross[2, 5] and not cross[2, 4]


def test_static_modality_is_aligned_with_every_step():
    layout = ModalityGraph(["seq", "static"]).layout(steps=(3, 1))
    assert layout.adjacency[0, 3, :3].all() and layout.adjacency[0, :3, 3].all()


def test_batched_edge_index_matches_dense_adjacency_and_honours_mask():
    graph = ModalityGraph(MODS, "complete")
    mask = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    dense = graph.dense_adjacency(mask)  # [B, R, N, N]
    edges = graph.edge_index_dict(mask, homogeneous=True)["cross"]
    rebuilt = torch.zeros(3 * 3, 3 * 3, dtype=torch.bool)
    rebuilt[edges[1], edges[0]] = True
    expected = torch.block_diag(*[dense[b, 0].float() for b in range(3)]).bool()
    assert torch.equal(rebuilt, expected)
    flat_mask = mask.reshape(-1)
    assert flat_mask[edges].all()  # no edge touches an absent node


def test_hetero_edge_index_dict_uses_type_local_indices():
    graph = ModalityGraph(["a", "b"], "complete")
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    edges = graph.edge_index_dict(mask)
    assert torch.equal(edges[("a", "cross", "b")], torch.tensor([[0, 2], [0, 2]]))  # sample 1 lacks b
    assert torch.equal(edges[("a", "cross", "a")], torch.tensor([[0, 1, 2], [0, 1, 2]]))  # self-loops


def test_to_hetero_data_builds_a_batched_heterodata():
    graph = ModalityGraph(["a", "b"], "complete")
    data = graph.to_hetero_data({"a": torch.randn(4, 3), "b": torch.randn(4, 5, 2)})
    assert data["a"].x.shape == (4, 3) and data["b"].x.shape == (20, 2)
    assert data["a", "cross", "b"].edge_index.shape[1] == 20  # a aligned with every step of b
    assert int(data["b"].batch.max()) == 3
