#!/usr/bin/env bash
# The project's main job: compare every fusion (quick protocol) once benchmarks/compare_fusion.py exists,
# otherwise the quickstart demo. Extra arguments go to the benchmark.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"
cd "$root"
if [ -f benchmarks/compare_fusion.py ]; then
  python benchmarks/compare_fusion.py --quick --jobs 2 "$@"
else
  python examples/quickstart.py
fi
