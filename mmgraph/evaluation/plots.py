"""PNG plots of a comparison: the ranked scores, the missing-modality curves and the corruption curves per data set."""

from __future__ import annotations

from pathlib import Path

from mmgraph.evaluation.report import PRIMARY_LABELS
from mmgraph.evaluation.summary import ranked
from mmgraph.viz import pyplot

__all__ = ["plots"]


def plots(summary: dict, meta: dict, out: Path) -> list[str]:
    """Write PNGs into ``out`` (``accuracy_<dataset>.png``, ``robustness_<dataset>.png``,
    ``corruption_<dataset>.png``); returns their file names."""
    plt = pyplot()  # an ImportError naming `pip install "mmgraph[viz]"` when matplotlib is absent
    plt.switch_backend("agg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset, by_dropout in summary.items():
        label, percent = PRIMARY_LABELS[meta.get("metrics", {}).get(dataset, {}).get("primary", "accuracy")]
        scale = 100 if percent else 1
        axis = f"test {label}" + (" (%)" if percent else "")
        rows = by_dropout.get("0.0") or next(iter(by_dropout.values()))
        order = ranked(rows)
        methods = [m for m, _ in order]
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(methods)), 3.6))
        means = [scale * row["score"]["mean"] for _, row in order]
        stds = [scale * row["score"]["std"] for _, row in order]
        colors = ["tab:red" if m.startswith("gnn") else "tab:blue" for m in methods]
        ax.bar(methods, means, yerr=stds, capsize=3, color=colors)
        finite = [m - s for m, s in zip(means, stds) if m == m]
        if percent and finite:
            ax.set_ylim(max(0, min(finite) - 5), 100)
        ax.set_ylabel(axis)
        ax.set_title(f"{dataset}: mean ± std over {order[0][1]['runs']} run(s)")
        ax.tick_params(axis="x", rotation=45)
        fig.tight_layout()
        written.append(_save(fig, out / f"accuracy_{dataset}.png"))

        curves = [(dropout, m, r["robustness"]) for dropout, rs in by_dropout.items() for m, r in rs.items()
                  if "robustness" in r]
        if curves:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for dropout, method, curve in curves:
                name = method + ("" if float(dropout) == 0 else f" (+modality dropout {dropout})")
                gnn = method.startswith("gnn")
                ax.plot([float(r) for r in curve], [scale * v for v in curve.values()], "-" if gnn else "--",
                        marker="o", ms=3, label=name, lw=2.2 if gnn else 1.0)
            ax.set_xlabel("fraction of modalities dropped at test time")
            ax.set_ylabel(axis)
            ax.set_title(f"{dataset}: robustness to missing modalities")
            ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            written.append(_save(fig, out / f"robustness_{dataset}.png"))

        corrupted = {m: r["corruption"] for m, r in rows.items() if "corruption" in r}
        if corrupted:
            modalities = list(next(iter(corrupted.values())))
            fig, axes = plt.subplots(1, len(modalities), figsize=(4.2 * len(modalities), 3.8), squeeze=False,
                                     sharey=True)
            for ax, name in zip(axes[0], modalities):
                for method, by_modality in corrupted.items():
                    curve = by_modality[name]
                    gnn = method.startswith("gnn")
                    rel = rows[method]["relative_robustness"]["mean"]
                    ax.plot([float(level) for level in curve], [scale * v for v in curve.values()],
                            "-" if gnn else "--", lw=2.2 if gnn else 1.0, label=f"{method} (rel. {scale * rel:.1f})")
                ax.set_xlabel(f"corruption level of {name}")
                ax.set_title(f"{dataset}: {name} corrupted")
            axes[0][0].set_ylabel(axis)
            axes[0][-1].legend(fontsize=6, ncol=2)
            fig.tight_layout()
            written.append(_save(fig, out / f"corruption_{dataset}.png"))
    return written


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path.name
