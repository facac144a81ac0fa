"""The house's size limits: no module over 400 lines, no function over 60 lines or with more than 8 parameters
(the command line's command signatures aside, whose options Typer declares one per parameter)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparseseg"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE, MAX_FUNCTION, MAX_PARAMETERS = 400, 60, 8


def _functions(path: Path):
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _parameters(function) -> int:
    a = function.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_over_60_lines_or_8_parameters(path):
    cli = path.relative_to(PACKAGE).parts[0] == "cli"
    for function in _functions(path):
        lines = function.end_lineno - function.lineno + 1
        assert lines <= MAX_FUNCTION, f"{function.name}: {lines} lines"
        if not (cli and function.decorator_list):  # a command: Typer's options, one per parameter
            assert _parameters(function) <= MAX_PARAMETERS, f"{function.name}: {_parameters(function)} parameters"


def test_the_limits_can_fail(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f(a, b, c, d, e, f, g, h, i):\n" + "    x = 1\n" * 60)
    (function,) = _functions(long)
    assert function.end_lineno - function.lineno + 1 == 61 and _parameters(function) == 9
