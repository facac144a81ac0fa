"""The package's layers are its folders: napari/ and cli/ -> commands/ -> large/ -> method/ -> io/ -> the shared words
at the top (config, errors). No import runs back up, the numpy-only modules import without torch, and only the napari
plugin touches napari or Qt."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparseseg"

#: Each layer (a package, or the top-level modules) may import only from itself and the layers after it.
LAYERS = [{"napari", "cli", "__main__"}, {"commands"}, {"large"}, {"method"}, {"io"}, {"config", "errors", "__init__"}]

#: Modules that must import without torch installed.
NUMPY_ONLY = [
    "config",
    "errors",
    "io",
    "io.blocks",
    "io.paths",
    "method.annotation",
    "method.decision",
    "method.features",
    "method.forest",
    "method.forest_apply",
    "method.forest_file",
    "method.forest_sample",
    "method.holdout",
    "method.inputs",
    "method.metrics",
    "method.model_config",
    "method.model_files",
    "method.planning",
    "method.preprocess",
    "method.tiling",
    "method.uncertainty",
    "large.slabs",
    "method.plane_annotation",
    "commands.plot",
    "commands.preview",
    "commands.synthetic",
]

#: Top-level packages of the GUI: only sparseseg.napari imports them.
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy", "npe2")


def _layer_of(path: Path) -> str:
    """The layer entry of a source file: its package's name, or its own name at the top."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else path.stem


def _imports(path: Path) -> set[str]:
    """The layer entries that the file at ``path`` imports from, anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparseseg"):
            parts = node.module.split(".")
            found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sparseseg."))
    return found - {"UNLABELED", "__version__"}


def test_every_file_has_a_layer():
    entries = {_layer_of(p) for p in PACKAGE.rglob("*.py")}
    assert entries == set().union(*LAYERS)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_back_up(path):
    level = next(i for i, layer in enumerate(LAYERS) if _layer_of(path) in layer)
    allowed = set().union(*LAYERS[level:])
    wrong = _imports(path) - allowed
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)} from a higher layer"


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
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert path.stem == "__main__" or doc, f"{path.relative_to(PACKAGE)} has no opening docstring"


def _external_imports(path: Path) -> set[str]:
    """The top-level packages outside sparseseg that the file at ``path`` imports, anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found - {"sparseseg"}


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if _layer_of(p) != "napari"),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_plugin_imports_the_gui(path):
    assert not _external_imports(path) & set(GUI), f"{path.relative_to(PACKAGE)} imports a GUI package"


def test_the_command_line_loads_no_gui():
    code = (
        "import sys, sparseseg.cli, sparseseg.commands.workflows, sparseseg.napari, sparseseg.napari.loop, "
        f"sparseseg.napari.files; print(sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
