#!/usr/bin/env bash
# The project's test suite (what CI runs), on two pytest-xdist workers (one per core; each test process uses one
# torch thread, tests/conftest.py) that steal work from each other at the tail. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"
cd "$root"
python -m pytest -q -n 2 --dist worksteal "$@"
