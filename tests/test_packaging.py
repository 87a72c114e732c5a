"""Packaging: one version source, the MIT LICENSE and py.typed in the wheel, matplotlib an optional extra imported
lazily, every extra installable (no mvlearn pin). Building the wheel and resolving the extras need the network, so
they are checked by hand (docs: README's install paragraph); these tests check what the files promise."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import mmgraph

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_written_once_in_mmgraph_init():
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    source = project["tool"]["hatch"]["version"]["path"]
    assert source == "mmgraph/__init__.py"
    written = re.findall(r'^__version__ = "([^"]+)"$', (ROOT / source).read_text(), flags=re.M)
    assert written == [mmgraph.__version__] and re.fullmatch(r"\d+\.\d+\.\d+", mmgraph.__version__)


def test_license_build_floor_and_py_typed():
    project = _pyproject()
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the mmgraph developers" in text
    assert project["build-system"]["requires"] == ["hatchling>=1.27"]  # PEP 639 license + license-files
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["mmgraph"]
    assert (ROOT / "mmgraph" / "py.typed").is_file()
    assert "Typing :: Typed" in project["project"]["classifiers"]


def test_matplotlib_is_the_viz_extra_and_no_extra_pins_mvlearn():
    project = _pyproject()
    names = lambda requirements: {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in requirements}  # noqa: E731
    assert "matplotlib" not in names(project["project"]["dependencies"])
    extras = project["project"]["optional-dependencies"]
    assert names(extras["viz"]) == {"matplotlib"} and extras["data"] == ["espeakng-loader==0.2.4"]
    assert all("mvlearn" not in names(requirements) for requirements in extras.values())
    assert "pytest-xdist" in names(extras["dev"])


def test_every_matplotlib_import_in_the_library_is_inside_a_function():
    module_level = []
    for path in sorted((ROOT / "mmgraph").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # top-level statements only
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            module_level += [f"{path.relative_to(ROOT)}: {n}" for n in imported if n.split(".")[0] == "matplotlib"]
    assert module_level == []


def test_drawing_without_matplotlib_names_the_viz_extra(monkeypatch):
    from mmgraph.viz import plot_explanation, pyplot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'drawing needs matplotlib.*pip install "mmgraph\[viz\]"'):
        pyplot()
    with pytest.raises(ImportError, match=r'pip install "mmgraph\[viz\]"'):
        plot_explanation({"edges": [], "readout": None})
