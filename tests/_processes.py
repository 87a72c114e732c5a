"""Run a command whose children must not outlive a test: torchrun's workers (see :func:`run_group`)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def run_group(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` in a session of its own. On timeout the whole
    process group is killed, not only the launcher: ``subprocess.run``'s own timeout kills torchrun and leaves a worker
    stuck in a collective running (one lived for 30 minutes after a timed-out test on the dependency floor); then the
    test fails with the output so far."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... timed out after {timeout} s (its process group was killed)\n"
                    f"stdout: {stdout[-1500:]}\nstderr: {stderr[:1500]}\n...\n{stderr[-1500:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
