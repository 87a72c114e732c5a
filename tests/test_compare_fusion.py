"""benchmarks/compare_fusion.py and benchmarks/throughput.py end to end on tiny configurations, and flag validation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare_fusion.py"


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_tiny_run_writes_json_markdown_and_plots(tmp_path):
    result = run("--datasets", "synthetic-interaction", "--methods", "gnn", "concat", "--seeds", "0",
                 "--epochs", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "compare_fusion.json").read_text())
    assert report["meta"]["seeds"] == [0]
    assert {"torch", "torch_geometric", "python"} <= set(report["meta"]["versions"])
    rows = report["summary"]["synthetic-interaction"]["0.0"]
    assert set(rows) == {"gnn", "concat"}
    for row in rows.values():
        assert 0.0 <= row["accuracy"]["mean"] <= 1.0
        assert row["parameters"] > 0 and row["inference_samples_per_s"]["mean"] > 0
        assert set(row["robustness"]) == {"0.0", "0.2", "0.4", "0.5", "0.6", "0.8"}
    # the GNN also ran with modality dropout during training
    assert "gnn" in report["summary"]["synthetic-interaction"]["0.5"]
    assert len(report["runs"]) == 3
    table = (tmp_path / "compare_fusion.md").read_text()
    assert "| gnn |" in table and "| concat |" in table and "p=0.8" in table
    for name in report["meta"]["plots"]:
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert "accuracy_synthetic-interaction.png" in report["meta"]["plots"]
    assert "robustness_synthetic-interaction.png" in report["meta"]["plots"]


@pytest.mark.parametrize("flags, words", [
    (["--methods", "transformer-xl"], "unknown method"),
    (["--datasets", "imagenet"], "unknown data set"),
    (["--quick", "--full"], "not allowed with"),
])
def test_bad_flags_exit_non_zero_with_a_clear_message(flags, words, tmp_path):
    result = run(*flags, "--out", str(tmp_path))
    assert result.returncode != 0
    assert words in result.stderr


def test_throughput_benchmark_runs_and_reports_ratios_over_rounds(tmp_path):
    out = tmp_path / "throughput.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--batch-size", "8",
                             "--modalities", "3", "--dim", "16", "--threads", "1", "--seconds", "0.05",
                             "--rounds", "2", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"auto", "pyg", "plain_pyg", "concat_mlp"}
    for row in report["results"].values():
        assert row["samples_per_s"] > 0 and len(row["ms_per_step_rounds"]) == 2
    for name, (low, high) in report["ratio_ranges_over_rounds"].items():
        assert low <= report["ratios"][name] <= high
    assert "auto vs pyg backend:" in result.stdout


def test_throughput_sequences_reports_every_backend_with_its_own_peak_memory(tmp_path):
    out = tmp_path / "sequences.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--sequences", "--steps",
                             "--unaligned", "2", "5", "7", "--unaligned-batch", "3", "--dim", "8",
                             "--dense-max-nodes", "14", "--threads", "1", "--seconds", "0.05", "--rounds", "2",
                             "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (case,) = json.loads(out.read_text())["cases"]
    assert case["lengths"] == [2, 5, 7] and case["nodes"] == 14
    assert set(case["backends"]) == {"auto", "dense", "sparse", "pyg"}
    for row in case["backends"].values():
        assert row["ms_per_step"] > 0 and row["peak_rss_mib"] >= row["rss_before_model_mib"] > 0
    assert case["backends"]["sparse"]["path"] == "sparse" and case["backends"]["auto"]["path"] in ("dense", "sparse")
    assert "| 2/5/7 (14) | 3 | sparse (sparse) |" in result.stdout
