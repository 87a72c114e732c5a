"""Every code block of README.md and docs/*.md works when pasted (issue 18).

**Python blocks** (```python, also indented inside a list item) are each written to a script and run in a fresh
process, in a temporary working directory, with ``MPLBACKEND=Agg``, ``HF_HUB_OFFLINE=1`` and one thread; the test
asserts exit status 0 and names the block's file and first line. A block therefore defines everything it uses: no
names from an earlier block. Importing torch, torch-geometric and scikit-learn costs ~3 s of CPU, more than most
blocks, so the fresh processes are forks of one *zygote* per test worker: a ``python`` subprocess that has imported
``mmgraph`` and the third-party libraries its lazily imported parts use (torch-geometric, networkx, scikit-learn),
nothing of the test's, and forks once per block. The child changes into the block's folder, sends its output to a
file, runs the script with ``runpy.run_path(..., run_name="__main__")`` in fresh globals and exits as a script does
(garbage collected, atexit handlers run, buffers flushed; only the interpreter's teardown of torch's modules, 1.5 s
of CPU, is skipped). A block that forgets an import still fails with ``NameError``. Blocks keep their data sets
small (handwritten's 2000 samples, synthetic generators) and their training short where the point is not accuracy:
the whole file takes ~50 s of CPU.

Two HTML comments on the line right before a block's fence change how it runs; use them sparingly:

* ``<!-- not-run: reason -->``: not run (it needs a GPU, a data file the user brings, a long run...). The reason
  is required and shows up as the skip reason.
* ``<!-- after: FILE -->``: a script meant for *another process* that reads ``FILE`` (a saved model, a
  checkpoint), written by an earlier block of the same page: the nearest earlier python block whose code names
  ``FILE`` and is not itself ``after`` it. The block runs in a fresh subprocess too, but in a copy of the folder
  that block left behind. Python names still do not carry over. Each block runs once per session (a lock-guarded
  cache shared by the xdist workers), so a block others run after is not trained twice.

**Shell blocks** (```bash) are not run as a whole: most of them are long jobs (``bash scripts/main.sh``, full
training runs, ``torchrun``) or need the user's files (``--data mine.npz``). Instead every command line of the form
``python -m mmgraph[.module] ARGS`` or ``mmgraph ARGS`` is checked to *parse*: it runs (in the zygote too) with
``argparse.ArgumentParser.parse_args`` patched to stop with exit status 0 right after the first successful parse
(a dispatcher's parse, one with an ``argparse.REMAINDER`` argument like ``mmgraph COMMAND ...``, goes on to the
command's own parser), so unknown options, bad choices and values the option types reject fail here, before any
data is loaded (checks the command makes after parsing, e.g. ``--heads`` dividing ``--dim``, are
tests/test_cli.py's). A shell block preceded by ``<!-- run -->`` is cheap and safe, and is run whole with
``bash -e`` in a subprocess (the venv's ``python`` first on ``PATH``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 300

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<name>not-run|after|run)\s*(?::\s*(?P<value>.*?))?\s*-->\s*$")
# python -m mmgraph[.module] ... or the console script mmgraph ...; torchrun and scripts are left alone
COMMAND = re.compile(r"^(?:python3?\s+-m\s+(?P<module>mmgraph(?:\.[\w.]+)?)|(?P<script>mmgraph))(?:\s|$)")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, the line of its opening fence (1-based), language, dedented code, and the
    directive comment before it (``name``, ``value``) if any."""

    page: Path
    line: int
    lang: str
    code: str
    directive: str | None = None
    value: str | None = None
    previous: "Block | None" = None    # for ``after``: the block that writes the file this one reads

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page.name
        return f"{page}:{self.line}"


def extract_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order (``lang`` "" for plain text); a fence may be indented (a block in a
    list item)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = len(opening.group("indent")), opening.group("lang")
        end = i + 1
        while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.name}:{i + 1}: unclosed code block")
        code = "\n".join(line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[i + 1:end])
        directive = value = None
        if i > 0 and (found := DIRECTIVE.match(lines[i - 1])):
            directive, value = found.group("name"), found.group("value")
        if directive in ("not-run", "after") and not value:
            raise AssertionError(f"{page.name}:{i + 1}: <!-- {directive}: ... --> needs a value")
        previous = None
        if directive == "after":
            previous = next((b for b in reversed(blocks) if b.lang == "python" and value in b.code
                             and not (b.directive == "after" and b.value == value)), None)
            if previous is None:
                raise AssertionError(f"{page.name}:{i + 1}: <!-- after: {value} --> but no earlier "
                                     f"python block names {value}")
        blocks.append(Block(page, i + 1, lang, code + "\n", directive, value, previous))
        i = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in extract_blocks(page)]
PYTHON_BLOCKS = [block for block in BLOCKS if block.lang == "python"]
BASH_BLOCKS = [block for block in BLOCKS if block.lang in ("bash", "sh", "shell", "console")]
COMMANDS = [(block, offset, line) for block in BASH_BLOCKS if block.directive != "run"
            for offset, line in enumerate(block.code.splitlines())
            if COMMAND.match(line.strip())]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


def _run(argv: list[str], cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: still running after {TIMEOUT_S} s", pytrace=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        pytest.fail(f"{what}: exit status {done.returncode}\n{output}", pytrace=False)


ZYGOTE = """\
import atexit, gc, json, os, runpy, sys, time, traceback

# imported once; every block runs in a fork of this interpreter. mmgraph's own heavy modules stay unimported (its
# lazy imports run in each block as in a fresh script); only the third-party libraries behind them are preloaded
import mmgraph, networkx, sklearn.model_selection, torch_geometric.nn  # noqa: F401,E401

gc.freeze()  # the children's collections skip these objects (and do not copy their pages)


def run(request):
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.argv = list(request["argv"])
    sys.path[0] = request["cwd"]  # as `python script.py` puts the script's folder first
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the child ends as a script ends, minus the interpreter's teardown (1.5 s of CPU after torch)
        sys.stdin.close()
        code = run(request)
        gc.collect()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    deadline, status = time.monotonic() + request["timeout"], None
    while status is None:
        done, waited = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(waited)
        elif time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.02)
    print(json.dumps(status), flush=True)
"""


class Zygote:
    """A python subprocess with mmgraph imported that runs scripts in forks of itself (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stderr = folder / "zygote.log"
        with open(self.stderr, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=folder, env=_env(), text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)

    def run(self, script: Path, argv: list[str], cwd: Path, what: str) -> None:
        """Run ``script`` with ``sys.argv = argv`` in ``cwd``; fail the test (naming ``what``) unless it exits 0."""
        log = cwd / f".{script.name}.log"
        request = dict(script=str(script), argv=argv, cwd=str(cwd), log=str(log), timeout=TIMEOUT_S)
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            status = json.loads(self.process.stdout.readline() or "null")
        except (BrokenPipeError, json.JSONDecodeError):
            status = None
        output = log.read_text(errors="replace") if log.exists() else ""
        log.unlink(missing_ok=True)
        if status is None:
            pytest.fail(f"{what}: the zygote process died:\n{self.stderr.read_text()[-4000:]}", pytrace=False)
        if status == "timeout":
            pytest.fail(f"{what}: still running after {TIMEOUT_S} s\n{output[-4000:]}", pytrace=False)
        if status != 0:
            pytest.fail(f"{what}: exit status {status}\n{output[-4000:]}", pytrace=False)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    process = Zygote(tmp_path_factory.mktemp("zygote"))
    yield process
    process.close()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A folder shared by the xdist workers of one session: blocks that others run ``after`` run once."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "doc-blocks"


def _key(block: Block) -> str:
    chain, b = [], block
    while b is not None:
        chain.append(f"{b.where}\n{b.code}")
        b = b.previous
    return hashlib.sha256("\n".join(chain).encode()).hexdigest()[:16]


def run_python_block(block: Block, cache: Path, zygote: Zygote) -> Path:
    """Run ``block`` (after the blocks it follows) once per session; the folder it leaves behind."""
    from filelock import FileLock  # a dependency of torch

    cache.mkdir(parents=True, exist_ok=True)
    key = f"{block.page.stem}-{block.line}-{_key(block)}"
    workdir, failed = cache / key, cache / f"{key}.failed"
    with FileLock(str(cache / f"{key}.lock")):
        if failed.exists():
            pytest.fail(failed.read_text(), pytrace=False)
        if (cache / f"{key}.done").exists():
            return workdir
        if block.previous is not None:
            try:
                source = run_python_block(block.previous, cache, zygote)
            except pytest.fail.Exception as error:
                message = f"{block.where}: the block it runs after, {block.previous.where}, failed:\n{error}"
                failed.write_text(message)
                pytest.fail(message, pytrace=False)
            shutil.copytree(source, workdir)
        else:
            workdir.mkdir()
        script = workdir / f"block_{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        try:
            zygote.run(script, [script.name], workdir, f"{block.where} (python block)\n{block.code}")
        except pytest.fail.Exception as error:
            failed.write_text(str(error))
            raise
        finally:
            script.unlink()
        (cache / f"{key}.done").touch()
    return workdir


# blocks that trace a model need torch >= 2.5, as the dynamo-marked tests (tests/conftest.py)
DYNAMO_CALLS = ("torch.export", "torch.compile", "export_onnx(")


@pytest.mark.parametrize("block", [pytest.param(block, marks=pytest.mark.dynamo)
                                   if any(call in block.code for call in DYNAMO_CALLS) else block
                                   for block in PYTHON_BLOCKS], ids=[block.where for block in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, cache_dir: Path, zygote: Zygote) -> None:
    if block.directive == "not-run":
        pytest.skip(f"{block.where}: not-run: {block.value}")
    run_python_block(block, cache_dir, zygote)


PARSE_ONLY = """\
import argparse, runpy, sys

_parse_args = argparse.ArgumentParser.parse_args


def parse_args(self, args=None, namespace=None):
    parsed = _parse_args(self, args, namespace)     # exits with status 2 on a usage error
    if any(action.nargs == argparse.REMAINDER for action in self._actions):
        return parsed                               # a dispatcher (mmgraph COMMAND ...): the command's parser is next
    print("parsed:", sys.argv[1:])
    raise SystemExit(0)


argparse.ArgumentParser.parse_args = parse_args
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
raise SystemExit("the command line was never parsed")
"""


@pytest.mark.parametrize("command", COMMANDS,
                         ids=[f"{block.where}+{offset}" for block, offset, _ in COMMANDS])
def test_shell_command_parses(command, tmp_path: Path, zygote: Zygote) -> None:
    block, offset, line = command
    words = shlex.split(line.strip(), comments=True)
    found = COMMAND.match(line.strip())
    module = found.group("module") or "mmgraph"
    args = words[3:] if found.group("module") else words[1:]
    script = tmp_path / "parse_only.py"
    script.write_text(PARSE_ONLY)
    zygote.run(script, [script.name, module, *args], tmp_path,
               f"{block.where} line {block.line + 1 + offset}: {line.strip()}")


@pytest.mark.parametrize("block", [b for b in BASH_BLOCKS if b.directive == "run"],
                         ids=[b.where for b in BASH_BLOCKS if b.directive == "run"])
def test_shell_block_runs(block: Block, tmp_path: Path) -> None:
    _run(["bash", "-e", "-c", block.code], tmp_path, f"{block.where} (shell block)\n{block.code}")


def test_blocks_are_found() -> None:
    """The extractor sees the pages' blocks (a broken fence would silently drop the rest of a page)."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        fences = len(re.findall(r"^\s*```", text, flags=re.MULTILINE))
        assert fences == 2 * len([b for b in BLOCKS if b.page == page]), page
    assert len(PYTHON_BLOCKS) >= 15 and COMMANDS


PAGE = """\
# a page

```python
import pathlib
secret = 42
pathlib.Path("model.bin").write_text("saved")
```

- a list item:

  ```python
  print("indented")
  ```

<!-- after: model.bin -->
```python
import pathlib
assert pathlib.Path("model.bin").read_text() == "saved"
print(secret)
```

<!-- not-run: needs a GPU -->
```python
import torch
torch.zeros(1, device="cuda")
```
"""


def test_the_harness_reports_a_failing_block_by_page_and_line(tmp_path: Path, zygote: Zygote) -> None:
    """Extraction (indented fences, directives, the block an ``after`` block follows) and the runner: a block
    passes, an ``after`` block finds the file its producer wrote but not its names, and the failure names the page
    and line of the block with the traceback."""
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    writer, indented, reader, gpu = extract_blocks(page)
    assert [b.line for b in (writer, indented, reader, gpu)] == [3, 11, 16, 23]
    assert indented.code == 'print("indented")\n' and indented.directive is None
    assert reader.directive == "after" and reader.previous is writer and gpu.value == "needs a GPU"
    cache = tmp_path / "cache"
    assert (run_python_block(writer, cache, zygote) / "model.bin").read_text() == "saved"
    run_python_block(indented, cache, zygote)
    with pytest.raises(pytest.fail.Exception) as failure:
        run_python_block(reader, cache, zygote)
    assert "page.md:16 (python block)" in str(failure.value)
    assert "NameError: name 'secret' is not defined" in str(failure.value)
