"""Shipping a trained GNN-fusion model: file size, CPU inference speed and accuracy of fp32 / int8 / pruned
variants, equality of the exported programs, one-sample ``predict`` latency against the direct call, and the
scikit-learn estimator under cross-validation.

    python benchmarks/deploy.py [--rounds 7 --threads 1 --out results/deploy.json --no-sklearn]

On UCI handwritten (6 raw views, seed-0 stratified split: 64 / 16 / 20 % train / val / test, as the CLI), one
FusionModel with GNN fusion is trained on raw features (standardisation inside the model), with a fixed budget
(compare_fusion.py's before its re-tuning: dim 64, modality dropout 0.2, encoder dropout 0.2, Adam 1e-3, weight decay 1e-3,
<= 100 epochs, patience 15, best validation epoch restored). Then:

  fp32        the trained model, as written by ``model.save`` (one safetensors file);
  int8        ``mmgraph.models.quantize_int8(model)``: every ``nn.Linear`` weight int8 with per-channel scales,
              float activations; saved by ``model.save`` (int8 tensors in the file);
  int8-ao     ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`` (deprecated on
              torch 2.13; int8 activations too), saved by ``model.save``;
  int8-torchao  ``torchao.quantization.quantize_(model, Int8WeightOnlyConfig())``, when torchao is installed (not
              a dependency of mmgraph), saved by ``model.save``;
  pruned      50% L1 (magnitude) unstructured pruning of every ``nn.Linear`` weight (``torch.nn.utils.prune``, made
              permanent), no fine-tuning;
  export      ``torch.export.export`` (dynamic batch) and ONNX (``mmgraph.models.export_onnx``) run by ONNX
              Runtime: largest absolute difference of the test logits to eager fp32.

File sizes are of ``model.save``; accuracy is measured on the variant and again on the model loaded from its file
(int8-ao and int8-torchao load as weight-only int8, ``Int8Linear``).

One-sample latency: ``predict(model, {modality: ndarray [1, F]})`` on the model loaded from its file against
``model(inputs)`` (tensors, ``torch.no_grad``), the same sample, interleaved in each of ``--rounds`` rounds of
``--seconds``; per round the median of the calls, reported as the median over rounds and the median of the
per-round ratios.

Inference speed: the 400 test samples as one batch, ``--threads`` CPU threads, every variant timed in each of
``--rounds`` interleaved rounds; samples/s is the median over rounds and each ratio to fp32 the median of the
per-round ratios (this machine's speed drifts, so only interleaved ratios are comparable).

The scikit-learn figure: ``cross_val_score(MultiModalClassifier(modalities=sizes, fusion="gnn", random_state=0),
X, y, cv=3)`` on the 2000 samples, X the six views side by side (649 columns).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgraph import FusionModel, evaluate, fit, predict  # noqa: E402
from mmgraph.data import load_handwritten, stratified_split  # noqa: E402
from mmgraph.models import export_onnx, quantize_int8  # noqa: E402


def _train(seed: int) -> tuple[FusionModel, object, object]:
    data = load_handwritten()
    train_idx, val_idx, test_idx = stratified_split(data, test_size=0.2, val_size=0.2, seed=seed)
    train, val, test = data.subset(train_idx), data.subset(val_idx), data.subset(test_idx)
    model = FusionModel.from_dataset(train, "gnn", dim=64, modality_dropout=0.2, encoder_kwargs={"dropout": 0.2},
                                     standardize=True, seed=seed)
    fit(model, train, val, epochs=100, patience=15, weight_decay=1e-3, seed=seed, device="cpu", progress=False)
    return model.eval(), test, data


def _variants(model: FusionModel) -> dict[str, nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    pruned = copy.deepcopy(model)
    for module in pruned.modules():
        if isinstance(module, nn.Linear):
            prune.l1_unstructured(module, "weight", amount=0.5)
            prune.remove(module, "weight")
    variants = {"fp32": model, "int8": quantize_int8(model).eval(), "int8-ao": dynamic.eval()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        torchao = copy.deepcopy(model)
        quantize_(torchao, Int8WeightOnlyConfig())
        variants["int8-torchao"] = torchao.eval()
    except ImportError:
        pass
    variants["pruned"] = pruned.eval()
    return variants


def _saved(name: str, module: nn.Module, directory: Path) -> tuple[FusionModel, dict[str, int]]:
    """``module.save`` then ``FusionModel.load``: the loaded model and the bytes of the file and of its gzip."""
    path = module.save(directory / f"{name}.mmgraph")
    data = path.read_bytes()
    return FusionModel.load(path), {"file_bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=6))}


def _linear_share(model: nn.Module) -> float:
    """Share of the model's parameters that are ``nn.Linear`` weights (what int8 and pruning act on)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return linear / sum(p.numel() for p in model.parameters())


def _time(call, inputs, seconds: float) -> float:
    """Samples per second of ``call(inputs)`` over about ``seconds``."""
    batch = next(iter(inputs.values())).shape[0]
    call(inputs)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call(inputs)
        count += 1
    return count * batch / (time.perf_counter() - started)


def _exports(model: FusionModel, inputs: dict[str, torch.Tensor], directory: Path) -> dict[str, object]:
    """Exported programs (callables on the input dict) and their largest deviation from eager."""
    eager = model(inputs)["label"]
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = {name: {0: batch} for name in inputs}
    program = torch.export.export(model, (inputs,), dynamic_shapes=(dynamic,)).module()
    small = {name: x[:7] for name, x in inputs.items()}
    result: dict[str, object] = {
        "torch.export": lambda data: program(data),
        "torch_export_max_abs_diff": float((program(inputs)["label"] - eager).abs().max()),
        "torch_export_max_abs_diff_batch7": float((program(small)["label"] - model(small)["label"]).abs().max()),
    }
    try:
        import onnxruntime as ort
    except ImportError:
        result["onnx"] = "not measured: onnxruntime absent (pip install 'mmgraph[export]')"
        return result
    path = export_onnx(model, directory / "model.onnx", inputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    result["onnx_output_names"] = [node.name for node in session.get_outputs()]
    result["onnx_metadata"] = session.get_modelmeta().custom_metadata_map

    def run(data: dict[str, torch.Tensor]) -> np.ndarray:
        return session.run(["label"], {name: data[name.removeprefix("inputs_")].numpy() for name in names})[0]

    result["onnxruntime"] = run
    result["onnx_file_bytes"] = path.stat().st_size
    result["onnxruntime_max_abs_diff"] = float(np.abs(run(inputs) - eager.numpy()).max())
    result["onnxruntime_max_abs_diff_batch7"] = float(np.abs(run(small) - model(small)["label"].numpy()).max())
    return result


def _one_sample_latency(model: FusionModel, test, rounds: int, seconds: float) -> dict[str, object]:
    """``predict`` of one raw sample on a loaded model against the direct call, interleaved rounds."""
    sample = test[torch.arange(1)]
    tensors = sample.inputs
    arrays = {name: x.numpy() for name, x in reversed(tensors.items())}  # raw arrays, another key order

    def direct() -> None:
        with torch.no_grad():
            model(tensors)

    def predict_one() -> None:
        predict(model, arrays, device="cpu")

    assert int(predict(model, arrays, device="cpu")["label"][0]) == int(model(tensors)["label"].argmax())
    medians: dict[str, list[float]] = {"direct": [], "predict": []}
    for _ in range(rounds):
        for name, call in (("direct", direct), ("predict", predict_one)):
            call()
            times, started = [], time.perf_counter()
            while time.perf_counter() - started < seconds / 2:
                begin = time.perf_counter()
                call()
                times.append(time.perf_counter() - begin)
            medians[name].append(statistics.median(times))
    ratios = [p / d for p, d in zip(medians["predict"], medians["direct"])]
    return {"direct_ms": 1e3 * statistics.median(medians["direct"]),
            "predict_ms": 1e3 * statistics.median(medians["predict"]),
            "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)], "rounds": rounds}


def _sklearn_cv(data, seed: int) -> dict[str, object]:
    from sklearn.model_selection import cross_val_score

    from mmgraph.sklearn import MultiModalClassifier

    sizes = {name: shape[0] for name, shape in data.input_shapes.items()}
    X = np.concatenate([data.features[name].numpy() for name in sizes], axis=1)
    y = data.labels().numpy()
    started = time.perf_counter()
    scores = cross_val_score(MultiModalClassifier(modalities=sizes, fusion="gnn", random_state=seed), X, y, cv=3)
    return {"scores": scores.tolist(), "mean": float(scores.mean()), "time_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per variant per round")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the cross-validation of the estimator")
    parser.add_argument("--out", type=Path, default=Path("results/deploy.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, test, data = _train(args.seed)
    variants = _variants(model)
    inputs = test[torch.arange(len(test))].inputs
    report: dict[str, object] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()
                    or platform.machine(), "threads": args.threads},
        "test_samples": len(test), "parameters": sum(p.numel() for p in model.parameters()),
        "linear_weight_share": _linear_share(model), "variants": {}}
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        loaded = {}
        for name, module in variants.items():
            loaded[name], sizes = _saved(name, module, directory)
            linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
            report["variants"][name] = {
                "accuracy": evaluate(module, test, device="cpu")["label"]["accuracy"],
                "accuracy_after_load": evaluate(loaded[name], test, device="cpu")["label"]["accuracy"], **sizes,
                "zero_linear_weights": (sum(int((m.weight == 0).sum()) for m in linears)
                                        / max(1, sum(m.weight.numel() for m in linears))) if name == "pruned" else None}
        report["one_sample_predict"] = _one_sample_latency(loaded["fp32"], test, args.rounds, args.seconds)
        with torch.no_grad():
            exports = _exports(model, inputs, directory)
            callables = {name: (lambda data, module=module: module(data)) for name, module in variants.items()}
            callables.update({name: exports[name] for name in ("torch.export", "onnxruntime") if callable(
                exports.get(name))})
            rates: dict[str, list[float]] = {name: [] for name in callables}
            for _ in range(args.rounds):
                for name, call in callables.items():
                    rates[name].append(_time(call, inputs, args.seconds))
    for name, values in rates.items():
        ratios = [value / base for value, base in zip(values, rates["fp32"])]
        entry = report["variants"].setdefault(name, {})
        entry.update({"samples_per_s": statistics.median(values), "ratio_to_fp32": statistics.median(ratios),
                      "ratio_range": [min(ratios), max(ratios)]})
    report["export"] = {k: v for k, v in exports.items() if not callable(v)}
    report["int8_accuracy_drop_points"] = 100 * (report["variants"]["fp32"]["accuracy"]
                                                 - report["variants"]["int8"]["accuracy"])
    report["int8_file_ratio"] = report["variants"]["fp32"]["file_bytes"] / report["variants"]["int8"]["file_bytes"]
    if not args.no_sklearn:
        report["sklearn_cross_val_score"] = _sklearn_cv(data, args.seed)
    report["total_time_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_markdown(report))
    return report


def _markdown(report: dict) -> str:
    lines = ["| variant | test accuracy | file (KiB) | gzip (KiB) | samples/s | × fp32 (round range) |",
             "|---|---:|---:|---:|---:|---|"]
    for name, entry in report["variants"].items():
        accuracy = f"{100 * entry['accuracy']:.2f}%" if "accuracy" in entry else "= fp32"
        size = f"{entry['file_bytes'] / 1024:.0f}" if "file_bytes" in entry else "-"
        gz = f"{entry['gzip_bytes'] / 1024:.0f}" if "gzip_bytes" in entry else "-"
        low, high = entry["ratio_range"]
        lines.append(f"| {name} | {accuracy} | {size} | {gz} | {entry['samples_per_s']:,.0f} | "
                     f"{entry['ratio_to_fp32']:.2f} ({low:.2f}-{high:.2f}) |")
    latency = report["one_sample_predict"]
    lines.append("")
    lines.append(f"one sample: predict {latency['predict_ms']:.3f} ms, direct call {latency['direct_ms']:.3f} ms, "
                 f"ratio {latency['ratio']:.2f} ({latency['ratio_range'][0]:.2f}-{latency['ratio_range'][1]:.2f})")
    lines.append("")
    lines.append(json.dumps({"export": report["export"], "int8_accuracy_drop_points":
                             report["int8_accuracy_drop_points"], "int8_file_ratio": report["int8_file_ratio"],
                             "sklearn_cross_val_score": report.get("sklearn_cross_val_score")}, indent=1))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
