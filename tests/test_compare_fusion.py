"""benchmarks/compare_fusion.py, throughput.py and cnn_pooling.py end to end on tiny configurations, and flag
validation."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare_fusion.py"


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
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


@pytest.mark.slow
def test_update_replaces_only_the_rerun_methods_and_records_the_command(tmp_path, capsys):
    first = run("--datasets", "synthetic-interaction", "--methods", "gnn", "concat", "--seeds", "0", "--epochs", "1",
                "--out", str(tmp_path), "--no-plots")
    assert first.returncode == 0, first.stderr[-2000:]
    path = tmp_path / "compare_fusion.json"
    report = json.loads(path.read_text())
    for record in report["runs"]:  # sentinels: a replaced run loses its own, a kept run keeps it
        record["accuracy"] = -1.0
    path.write_text(json.dumps(report))
    script = _script("compare_fusion")  # the entry point ran above; the re-runs go in-process
    script.main(["--datasets", "synthetic-interaction", "--methods", "concat", "--seeds", "0", "--epochs", "1",
                 "--out", str(tmp_path), "--no-plots", "--update"])
    merged = json.loads(path.read_text())
    accuracy = {(r["method"], r["modality_dropout"]): r["accuracy"] for r in merged["runs"]}
    assert accuracy.pop(("concat", 0.0)) >= 0.0  # re-run
    assert set(accuracy.values()) == {-1.0} and set(accuracy) == {("gnn", 0.0), ("gnn", 0.5)}  # kept as they were
    assert [u["methods"] for u in merged["meta"]["updates"]] == [{"synthetic-interaction": ["concat"]}]
    table = (tmp_path / "compare_fusion.md").read_text()
    assert "--update" in merged["meta"]["updates"][0]["command"] and "--update" not in merged["meta"]["command"]
    assert "Then re-run (`--update`" in table and "| concat |" in table
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--datasets", "synthetic-interaction", "--methods", "concat", "--seeds", "1", "--epochs", "1",
                     "--out", str(tmp_path), "--no-plots", "--update"])
    assert exit_info.value.code != 0 and "seeds [0]" in capsys.readouterr().err


@pytest.mark.slow
def test_pruned_temporal_gnn_is_an_opt_in_method_on_sequence_data(tmp_path):
    result = run("--datasets", "synthetic-temporal", "--methods", "gnn-pruned-0.5", "--seeds", "0", "--epochs", "1",
                 "--out", str(tmp_path), "--no-plots")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "compare_fusion.json").read_text())
    assert [r["method"] for r in report["runs"]] == ["gnn-pruned-0.5"]


@pytest.mark.parametrize("flags, words", [
    (["--methods", "transformer-xl"], "unknown method"),
    (["--datasets", "imagenet"], "unknown data set"),
    (["--quick", "--full"], "not allowed with"),
    (["--methods", "gnn-pruned-1.5"], "unknown method"),
    (["--update", "--methods", "gnn"], "--update"),
])
def test_bad_flags_exit_non_zero_with_a_clear_message(flags, words, tmp_path, capsys):
    # in-process (argparse's exit), as the subprocess runs above exercise the script's entry point
    with pytest.raises(SystemExit) as exit_info:
        _script("compare_fusion").main([*flags, "--out", str(tmp_path)])
    assert exit_info.value.code != 0
    assert words in capsys.readouterr().err
    assert not (tmp_path / "compare_fusion.json").exists()


@pytest.mark.slow
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


def test_cnn_pooling_benchmark_times_both_poolings(capsys):
    module = _script("cnn_pooling")
    threads = torch.get_num_threads()
    try:
        module.main(["--rounds", "1", "--seconds", "0.01", "--no-avdigits"])
    finally:
        torch.set_num_threads(threads)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "x [" in line]
    assert len(rows) == 6 and all(float(row.split(" | ")[3].split("x")[0]) > 0 for row in rows)


@pytest.mark.slow
def test_throughput_sequences_reports_every_backend_with_its_own_peak_memory(tmp_path):
    out = tmp_path / "sequences.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--sequences", "--steps",
                             "--unaligned", "2", "5", "7", "--unaligned-batch", "3", "--dim", "8",
                             "--dense-max-nodes", "14", "--threads", "1", "--seconds", "0.05", "--rounds", "2",
                             "--edge-pruning", "0.5", "--bound", "--json", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (case,) = json.loads(out.read_text())["cases"]
    assert case["lengths"] == [2, 5, 7] and case["nodes"] == 14
    assert set(case["backends"]) == {"auto", "dense", "sparse", "pyg", "auto+pruned0.5", "bound"}
    bound = case["backends"].pop("bound")  # free message passing: timed, no memory subprocess
    assert bound["ms_per_step"] > 0 and bound["path"] == "messages free"
    for row in case["backends"].values():
        assert row["ms_per_step"] > 0 and row["peak_rss_mib"] >= row["rss_before_model_mib"] > 0
    assert case["backends"]["sparse"]["path"] == "sparse" and case["backends"]["auto"]["path"] in ("dense", "sparse")
    assert "| 2/5/7 (14) | 3 | sparse (sparse) |" in result.stdout


def test_bayes_ceiling_sets_each_method_of_a_report_beside_the_ceiling(tmp_path, capsys):
    module = _script("bayes_ceiling")
    bayes = module.ceiling([1])[1]
    assert 97.0 < bayes["val"] <= 100.0 and 97.0 < bayes["test"] <= 100.0
    runs = [{"dataset": "synthetic-temporal", "method": "gnn", "seed": 1, "accuracy": 0.95},
            {"dataset": "synthetic-temporal", "method": "gnn", "seed": 1, "modality_dropout": 0.5, "accuracy": 0.5},
            {"dataset": "handwritten", "method": "gnn", "seed": 1, "accuracy": 0.5}]
    (tmp_path / "report.json").write_text(json.dumps({"runs": runs}))
    report = module.main(["--seeds", "1", "--results", str(tmp_path / "report.json"), "--json",
                          str(tmp_path / "out.json")])
    assert report["bayes"] == {1: bayes} and json.loads((tmp_path / "out.json").read_text())["seeds"] == [1]
    assert report["methods"] == {"gnn": {"accuracy": [95.0], "gap": [pytest.approx(bayes["test"] - 95.0)]}}
    assert f"| gnn | 95.00 ± 0.00 | {bayes['test'] - 95.0:.2f} ± 0.00 | 1 |" in capsys.readouterr().out


def test_gnn_ablations_reports_each_variant_s_validation_runs_and_appends_them(tmp_path, capsys):
    """The script behind docs/design.md's validation tables: one figure per split seed x init offset, their
    mean ± std (mmgraph.metrics.mean_std), appended as a JSON line; a variant's kwargs reach the GNN."""
    from mmgraph.metrics import mean_std

    out = tmp_path / "ablations.jsonl"
    args = ["--dataset", "nutrimouse", "--seeds", "0", "--init-offsets", "0", "100", "--out", str(out)]
    results = _script("gnn_ablations").main(args + ["--variant", "default", "{}", "--variant", "one-layer",
                                                    '{"layers": 1}'])
    assert list(results) == ["default", "one-layer"]
    for row in results.values():
        assert len(row["val_accuracy"]) == 2 and all(0 <= v <= 100 for v in row["val_accuracy"])
        assert (row["mean"], row["std"]) == mean_std(row["val_accuracy"])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["default", "one-layer"] and lines[1]["kwargs"] == {"layers": 1}
    assert f"val {results['default']['mean']:6.2f}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="layers"):
        _script("gnn_ablations").main(args + ["--variant", "bad", '{"layers": -1}'])


@pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                    reason="av-digits needs the optional espeakng-loader package (mmgraph[data])")
@pytest.mark.slow
def test_av_digits_runs_fusions_temporal_gnn_and_unimodal_baselines_with_robustness_scores(tmp_path):
    # as a user runs it: av-digits from the user's cache (~/.cache/mmgraph), built there on first use
    result = run("--datasets", "av-digits", "--methods", "late", "gnn-temporal", "unimodal:image", "--epochs", "1",
                 "--out", str(tmp_path), "--jobs", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "compare_fusion.json").read_text())
    rows = report["summary"]["av-digits"]["0.0"]
    assert set(rows) == {"late", "gnn-temporal", "unimodal:image"}
    for method, row in rows.items():
        assert set(row["corruption"]) == {"image", "audio"}
        assert list(row["corruption"]["audio"]) == [str(k / 10) for k in range(11)]
        assert set(row["relative_robustness"]) == {"image", "audio", "mean"}
        assert set(row["effective_robustness"]) == {"image", "audio", "mean"}
    assert rows["late"]["effective_robustness"]["mean"] == 0.0
    # a unimodal baseline does not read the other modality: its accuracy does not move when that one is corrupted
    image_only = rows["unimodal:image"]
    assert set(image_only["corruption"]["audio"].values()) == {image_only["accuracy"]["mean"]}
    parameters = {r["method"]: r["parameters"] for r in report["runs"]}
    assert parameters["unimodal:image"] < parameters["late"]
    table = (tmp_path / "compare_fusion.md").read_text()
    assert "| unimodal:image |" in table and "rel. rob. (mean)" in table and "eff. audio" in table
    assert "corruption_av-digits.png" in report["meta"]["plots"]


@pytest.mark.slow
def test_data_dir_adds_the_field_s_benchmarks_that_are_present(tmp_path, capsys):
    from test_loaders import _write_affect, _write_avmnist

    data_dir = tmp_path / "data"
    (data_dir / "avmnist").mkdir(parents=True)
    _write_affect(data_dir / "mosi_raw.pkl", {"vision": 6, "audio": 6, "text": 6},
                  {"vision": 35, "audio": 74, "text": 300})
    _write_avmnist(data_dir / "avmnist", n_train=48, n_test=10)
    result = run("--datasets", "mosi", "mosei", "avmnist", "--data-dir", str(data_dir), "--methods", "late",
                 "unimodal:audio", "--epochs", "1", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "note: mosei skipped" in result.stderr and "mosei_senti_data.pkl not found" in result.stderr
    report = json.loads((tmp_path / "out" / "compare_fusion.json").read_text())
    assert set(report["summary"]) == {"mosi", "avmnist"}
    assert set(report["summary"]["mosi"]["0.0"]) == {"late"}  # no unimodal baselines on sequences with gaps
    assert set(report["summary"]["avmnist"]["0.0"]) == {"late", "unimodal:audio"}
    mosi = next(r for r in report["runs"] if r["dataset"] == "mosi")
    assert {"acc2", "acc2_nonzero", "f1", "acc7", "mae", "pearson"} <= set(mosi["test"]["sentiment"])
    assert mosi["accuracy"] == mosi["test"]["sentiment"]["acc2"]
    assert len(next(r for r in report["runs"] if r["dataset"] == "avmnist")["test"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        _script("compare_fusion").main(["--datasets", "mosi", "--out", str(tmp_path / "none")])
    assert exit_info.value.code != 0 and "need --data-dir" in capsys.readouterr().err
