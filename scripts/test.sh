#!/usr/bin/env bash
# The project's test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"
cd "$root"
python -m pytest -q "$@"
