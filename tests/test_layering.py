"""The package's layers: napari plugin, cli -> sweep -> workflows (and bioimage) -> modelfolder -> core -> pieces; no
import runs back up, the numpy-only pieces import without torch, and only the napari plugin touches napari or Qt."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparseseg"

#: Each layer may import only from the layers after it.
LAYERS = [
    {"napari"},
    {"cli", "__main__"},
    {"cli_options", "cli_output"},
    {"sweep"},
    {"workflows", "cluster", "bioimage"},
    {"review"},
    {"modelfolder", "bounded"},
    {"ensemble"},
    {"core"},
    {"streaming", "train", "infer", "augment", "model", "suggest", "preview", "plot", "synthetic", "io", "paths", "calibrate",
     "forest", "forest_file", "holdout"},
    {"slabs"},
    {"labels", "metrics", "tiling", "preprocess", "planning", "config", "blocks"},
    {"errors", "__init__"},
]

#: Modules that must import without torch installed.
NUMPY_ONLY = ["blocks", "calibrate", "config", "errors", "forest", "forest_file", "holdout", "io", "labels", "metrics", "paths", "planning", "plot",
              "preprocess", "preview", "slabs", "suggest", "synthetic", "tiling"]


#: Top-level packages of the GUI: only sparseseg.napari imports them.
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy", "npe2")


def _sources(module: str) -> list[Path]:
    """The source files of a layer entry: ``module.py``, or every module of the package ``module/`` (such as io)."""
    file = PACKAGE / f"{module}.py"
    return [file] if file.is_file() else sorted((PACKAGE / module).glob("*.py"))


def _imports(module: str) -> set[str]:
    """The sparseseg modules that ``module`` imports, anywhere in its source (a package's modules may import each other)."""
    found = set()
    for node in (node for path in _sources(module) for node in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparseseg"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sparseseg."))
    return found - {module}


def test_every_module_has_a_layer():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}  # a subpackage is one entry (io)
    modules = {p.stem for p in PACKAGE.glob("*.py")} | packages
    assert modules == set().union(*LAYERS)
    assert all(_sources(module) for module in modules)


@pytest.mark.parametrize("level", range(len(LAYERS)))
def test_no_import_runs_back_up(level):
    allowed = set().union(*LAYERS[level:]) | {"UNLABELED", "__version__"}  # its own layer and those below
    for module in LAYERS[level]:
        wrong = _imports(module) - allowed
        assert not wrong, f"sparseseg.{module} imports {sorted(wrong)} from a higher layer"


#: Makes torch not importable, as where it is not installed. (``sys.modules['torch'] = None`` would not do: scipy.stats,
#: which scikit-learn imports, asks sys.modules whether an array is a torch one and fails on the None.)
NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ModuleNotFoundError(f'No module named {name!r}')

sys.meta_path.insert(0, NoTorch())
"""


@pytest.mark.parametrize("module", NUMPY_ONLY)
def test_numpy_only_modules_import_without_torch(module):
    code = f"{NO_TORCH}\nimport sparseseg.{module}\nassert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_module_says_its_job():
    paths = [p for module in set().union(*LAYERS) for p in _sources(module)]
    assert set(paths) == set(PACKAGE.rglob("*.py"))  # the modules of the io package too
    for path in paths:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert path.stem == "__main__" or doc, f"{path.relative_to(PACKAGE)} has no opening docstring"


def _external_imports(module: str) -> set[str]:
    """The top-level packages outside sparseseg that ``module`` imports, anywhere in its source."""
    found = set()
    for node in (node for path in _sources(module) for node in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found - {"sparseseg"}


@pytest.mark.parametrize("module", sorted(set().union(*LAYERS) - {"napari"}))
def test_only_the_plugin_imports_the_gui(module):
    assert not _external_imports(module) & set(GUI), f"sparseseg.{module} imports a GUI package"


def test_the_command_line_loads_no_gui():
    code = ("import sys, sparseseg.cli, sparseseg.workflows, sparseseg.napari, sparseseg.napari.loop, sparseseg.napari.files; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
