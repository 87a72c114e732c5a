"""Pictures of what a trained graph fusion attends to: one sample's modality graph with networkx + matplotlib.

matplotlib is the optional extra ``viz`` (``pip install "mmgraph[viz]"``), imported only when a picture is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

__all__ = ["plot_explanation", "pyplot"]

VIZ_HINT = 'pip install "mmgraph[viz]"'


def pyplot():
    """``matplotlib.pyplot``, imported on first use; an ImportError that says how to install it when it is absent."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(f"drawing needs matplotlib, the optional extra `viz` of mmgraph: {VIZ_HINT} "
                          f"({error})") from error
    return plt


def plot_explanation(explanation: Mapping[str, Any], sample: int = 0, layer: int = -1, ax=None):
    """Draw one sample's explained modality graph and return the matplotlib figure.

    Args:
        explanation: the dict of :meth:`mmgraph.FusionModel.explain` or :meth:`mmgraph.MultiModalGNN.explain`.
        sample: which sample of the batch (``0 <= sample < B``).
        layer: which message-passing layer's attention to draw (negative counts from the last).
        ax: a matplotlib ``Axes`` to draw into; None = a new figure.

    Nodes are the sample's present nodes, labelled with their modality name (``name[t]`` for step ``t`` of a
    sequence), sized by their readout weight; edges ``j -> i`` are drawn with width proportional to the weight of
    the message (GAT attention averaged over heads, or the normalised GCN/SAGE weight). Self-loops are not drawn;
    a node's weight on its own state is in the node's label. With the ``concat`` readout (the default) each
    modality has its own readout slot, so a node's weight is its share of its modality's slot (1 for a modality of
    one node) and the title says so (``concat_attention`` explains its all-node slot, whose weights sum to 1).

    Example:
        >>> explanation = model.explain(inputs)
        >>> plot_explanation(explanation, sample=3).savefig("sample3.png")
    """
    from mmgraph.gnn import explanation_to_networkx

    plt = pyplot()
    edges = explanation.get("edges") if isinstance(explanation, Mapping) else None
    if not isinstance(edges, (list, tuple)) or "readout" not in explanation:
        raise TypeError("explanation: expected the dict returned by explain() (with 'edges' and 'readout'), got "
                        f"{type(explanation).__name__}")
    batch = explanation["readout"].shape[0]
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < batch:
        raise ValueError(f"sample: expected an int in [0, {batch}), got {sample!r}")
    if not edges:
        raise ValueError("explanation: the GNN has no message-passing layer (layers=0), so there is no attention "
                         "to draw")
    if isinstance(layer, bool) or not isinstance(layer, int) or not -len(edges) <= layer < len(edges):
        raise ValueError(f"layer: expected an int in [{-len(edges)}, {len(edges)}), got {layer!r}")

    graph = explanation_to_networkx(explanation, sample=sample, layer=layer)
    graph.remove_edges_from(list(nx.selfloop_edges(graph)))
    coefficients = explanation["edges"][layer][sample].mean(-1)  # [R, N (dst), N (src)], mean over heads
    names = list(explanation["node_names"])
    self_weight = {name: float(coefficients[:, n, n].sum()) for n, name in enumerate(names)}

    if ax is None:
        figure, ax = plt.subplots(figsize=(5.5, 5.0))
    else:
        figure = ax.figure
    positions = nx.circular_layout(graph)
    readout = [graph.nodes[node]["readout"] for node in graph.nodes]
    widths = [6.0 * graph.edges[edge]["weight"] for edge in graph.edges]
    sizes = [200 + 1400 * w for w in readout]
    nx.draw_networkx_nodes(graph, positions, ax=ax, node_size=sizes, node_color=readout, cmap="YlOrRd", vmin=0.0,
                           vmax=max(readout + [1e-9]), edgecolors="black", linewidths=0.8)
    nx.draw_networkx_edges(graph, positions, ax=ax, width=widths, alpha=0.55, edge_color="tab:blue", arrows=True,
                           arrowsize=10, connectionstyle="arc3,rad=0.12", node_size=sizes)
    for node, (x, y) in positions.items():  # labels outside the circle, aligned away from it, above the nodes
        align = "left" if x > 0.3 else "right" if x < -0.3 else "center"
        ax.text(1.3 * x, 1.45 * y, f"{node}\nreadout {graph.nodes[node]['readout']:.2f}\nself "
                f"{self_weight[node]:.2f}", ha=align, va="center", fontsize=8, zorder=5)
    depth = len(edges) + layer if layer < 0 else layer
    slots = explanation.get("readout_kind") == "concat"  # concat_attention's weights are its all-node slot's
    size = "node size = weight within its modality's readout slot" if slots else "node size = readout weight"
    ax.set_title(f"sample {sample}, layer {depth + 1} of {len(edges)}: {size}, edge width = attention",
                 fontsize=9)
    ax.margins(0.35)
    ax.set_axis_off()
    return figure
