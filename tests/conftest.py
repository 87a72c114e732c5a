"""Test-session settings.

Tests use tiny tensors, where intra-op threads buy nothing and, on a busy 2-core machine, OpenMP threads that spin
on each other make steps 10-50x slower. One thread keeps the suite fast and its timing independent of the machine's
load. Subprocess tests (the CLI, torchrun, the benchmark script) set their own threads.
"""

import torch

torch.set_num_threads(1)
