"""Importing mmgraph is silent: no warning about torch-geometric's own use of deprecated torch APIs."""

import os
import subprocess
import sys
from pathlib import Path


def test_import_raises_no_deprecation_or_future_warning():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning", "-c",
               "import mmgraph, mmgraph.train; mmgraph.MultiModalGNN({'a': 4, 'b': 4}, hidden=8)"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
