"""Importing mmgraph is silent (no warning about torch-geometric's own use of deprecated torch APIs) and light
(torch-geometric, networkx and matplotlib are imported when first used)."""

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


def test_import_mmgraph_leaves_pyg_networkx_and_matplotlib_out_until_used():
    # import mmgraph took 2.7 s, 1.5 s of it torch-geometric; a concat model needs none of them
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    script = (
        "import sys, torch, mmgraph\n"
        "heavy = ('torch_geometric', 'networkx', 'matplotlib')\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "model = mmgraph.FusionModel({'a': {'name': 'mlp', 'in_dim': 3}, 'b': {'name': 'mlp', 'in_dim': 2}}, "
        "'concat', {'y': 2}, dim=4)\n"
        "mmgraph.predict(model, {'a': torch.zeros(2, 3), 'b': torch.zeros(2, 2)})\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "from mmgraph import MultiModalGNN, ModalityGraph\n"
        "assert 'torch_geometric' in sys.modules and MultiModalGNN.__module__ == 'mmgraph.gnn.model'\n"
        "assert 'MultiModalGNN' in dir(mmgraph) and callable(mmgraph.compare)\n")
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
