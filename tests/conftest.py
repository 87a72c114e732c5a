"""Test-session settings.

Tests use tiny tensors, where intra-op threads buy nothing and, on a busy 2-core machine, OpenMP threads that spin
on each other make steps 10-50x slower. One thread keeps the suite fast and its timing independent of the machine's
load. Subprocess tests (the CLI, torchrun, the benchmark script) set their own threads.
"""

import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.slow`` tests (the end-to-end subprocess runs, 5-25 s each) are collected first, so that the two
    pytest-xdist workers (scripts/test.sh) start them at once instead of one worker finishing them alone at the end.

    ``@pytest.mark.dynamo`` tests (torch.compile / torch.export of our models) skip below torch 2.5: on the
    declared floor, torch 2.4, dynamo cannot trace the GNN (it fails on the ``HeteroConv`` module dict), so these
    features need torch >= 2.5 (docs/training.md)."""
    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: the order within each group is kept
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version >= (2, 5):
        return
    import pytest

    skip = pytest.mark.skip(reason=f"torch.compile / torch.export of mmgraph models need torch >= 2.5, "
                                   f"found {torch.__version__}")
    for item in items:
        if "dynamo" in item.keywords:
            item.add_marker(skip)
