"""DistributedDataParallel under torchrun: 2 CPU processes on gloo."""

import os
import sys
import time
from pathlib import Path

import pytest
import torch

from _processes import run_group
from mmgraph.train import load_checkpoint

WORKER = Path(__file__).with_name("_ddp_worker.py")


@pytest.mark.slow
def test_torchrun_two_processes_train_to_identical_parameters(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    # --standalone: torchrun binds a free port itself (no probe-and-release race with the CLI's torchrun test)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
               str(tmp_path)]
    completed = run_group(command, env, timeout=100)
    assert completed.returncode == 0, completed.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["world_size"] == 2 and r["epochs_run"] == 3 for r in ranks)
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    assert any(not torch.equal(value, ranks[0]["initial"][name]) for name, value in ranks[0]["state"].items())
    metrics = [[{k: v for k, v in epoch.items() if k != "time_s"} for epoch in r["history"]] for r in ranks]
    assert metrics[0] == metrics[1]  # all-reduced metrics: every rank sees the same scores, stops at the same epoch
    assert ranks[0]["history"][-1]["train_loss"] < ranks[0]["history"][0]["train_loss"]
    saved = load_checkpoint(tmp_path / "checkpoint.pt")  # written by rank 0 only
    assert saved["epoch"] == 3 and saved["config"]["world_size"] == 2


def test_the_cli_releases_the_process_group_when_a_run_fails(tmp_path, monkeypatch):
    """An error under torchrun must not leave the gloo group to the interpreter's exit (see
    mmgraph.training.distributed._abandon_distributed): one process, world size 1, a run that fails in fit."""
    import torch.distributed as dist

    from mmgraph.cli import train as cli

    def failing_fit(*args, **kwargs):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        raise ValueError("train: injected fault")

    monkeypatch.setattr(cli, "fit", failing_fit)
    with pytest.raises(SystemExit):
        cli.main(["--dataset", "synthetic-interaction", "--samples", "60", "--fusion", "concat", "--dim", "8",
                  "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"])
    assert not dist.is_initialized()


def test_a_timed_out_launcher_takes_its_children_with_it(tmp_path):
    """The torchrun tests run through run_group: on timeout the launcher's children die with it (subprocess.run's
    timeout kills the launcher only, and a worker waiting in a collective then outlives the test)."""
    pid_file = tmp_path / "child.pid"
    # the child holds no pipe of the launcher, so only the group kill can end it before its 60 s
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL, "
              f"stderr=subprocess.DEVNULL); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    with pytest.raises(pytest.fail.Exception, match="timed out after 2 s"):
        run_group([sys.executable, "-c", script], dict(os.environ), timeout=2)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
