"""The layering of the package, checked on its source (docs/architecture.rst states the rule).

Each module of ``flr_nnx`` belongs to one layer, found from its path; a module may import only
from the layers its own layer depends on. The zoo may take only the base class's names from the
core, nothing outside the engine imports an engine name with a leading underscore, no module
is over 400 lines, and no six statements of code are written twice.
"""

from __future__ import annotations

import ast
import collections
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "flr_nnx"

# layer -> the layers it may import from (itself included where listed)
DEPENDS_ON: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors", "core"},
    "engine": {"errors", "core", "engine"},
    "helpers": {"errors", "core", "helpers"},
    "zoo": {"errors", "core", "helpers", "zoo"},
    "compose": {"errors", "core", "engine", "helpers", "compose"},
    "bridges": {"errors", "core", "engine", "bridges"},
    "testing": {"errors", "core", "engine", "bridges", "testing"},
    "package": {"errors", "core", "engine", "helpers", "zoo", "compose", "bridges", "testing"},
}
# The only names the zoo takes from the core: an optimizer is written on the public hooks.
ZOO_FROM_CORE = {"flr_nnx._optimizer": {"Optimizer", "Key", "call"}}
CORE = {"_errors.py": "errors", "_optimizer.py": "core", "_contract.py": "core", "_tree.py": "core"}
SUBPACKAGES = {
    "_engine": "engine",
    "helpers": "helpers",
    "optim": "zoo",
    "compose": "compose",
    "testing": "testing",
}
MAX_LINES = 400
NNX_BRIDGE_MAX_LINES = 200


def _modules() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer_of_path(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    if parts == ("__init__.py",):
        return "package"
    if len(parts) > 1:
        return SUBPACKAGES.get(parts[0], f"unknown subpackage {parts[0]!r}")
    return CORE.get(parts[0], "bridges")


def _layer_of_module(name: str) -> str:
    """The layer of a dotted module name inside flr_nnx (``flr_nnx.optim._adam`` -> ``zoo``)."""
    parts = name.split(".")[1:]
    if not parts:
        return "package"
    if parts[0] in SUBPACKAGES:
        return SUBPACKAGES[parts[0]]
    return CORE.get(parts[0] + ".py", "bridges")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every import of an flr_nnx module, at any depth."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "flr_nnx":
                    found.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] != "flr_nnx":
                continue
            names = [alias.name for alias in node.names]
            if module == "flr_nnx":  # `from flr_nnx import optim`: the names are modules
                for name in names:
                    found.append((node.lineno, f"flr_nnx.{name}", []))
            else:
                found.append((node.lineno, module, names))
    return found


MODULES = _modules()


def test_every_module_has_a_known_layer():
    unknown = [
        f"{p.relative_to(PACKAGE)}: {_layer_of_path(p)}"
        for p in MODULES
        if _layer_of_path(p) not in DEPENDS_ON
    ]
    assert not unknown, (
        f"modules in no layer: {unknown}. Fix: add the subpackage to SUBPACKAGES in "
        "tests/test_architecture.py and to the dependency rule in docs/architecture.rst."
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    layer = _layer_of_path(path)
    problems = []
    for line, module, names in _imports(path):
        target = _layer_of_module(module)
        where = f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        if target not in DEPENDS_ON[layer]:
            problems.append(f"{where}: the {layer} layer may not depend on the {target} layer")
        if layer == "zoo" and target == "core":
            allowed = ZOO_FROM_CORE.get(module, set())
            extra = sorted(set(names) - allowed)
            if extra or not names:
                problems.append(
                    f"{where} {extra or '(the module)'}: the zoo takes only "
                    f"{sorted(allowed) or 'nothing'} from {module}; helpers go in flr_nnx.helpers"
                )
        if target == "engine" and layer != "engine":
            if module != "flr_nnx._engine":
                problems.append(f"{where}: import the engine's API from flr_nnx._engine")
            private = [n for n in names if n.startswith("_")]
            if private:
                problems.append(f"{where} {private}: private names of the engine")
    source = path.read_text()
    if layer != "engine" and "_engine._" in source:
        problems.append(f"{path.relative_to(PACKAGE)} reads a private name as `_engine._...`")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path):
    lines = len(path.read_text().splitlines())
    limit = NNX_BRIDGE_MAX_LINES if path == PACKAGE / "_nnx.py" else MAX_LINES
    assert lines <= limit, (
        f"{path.relative_to(PACKAGE)} has {lines} lines (limit {limit}): split it by job."
    )


def _statement_runs(path: pathlib.Path, window: int) -> list[tuple[int, tuple[str, ...]]]:
    """(line, statements) for every run of ``window`` consecutive statements of one body,
    and for every compound statement of ``window`` lines or more, as normalised source.

    Statements, not physical lines: a call spread over lines by the formatter (a constructor
    setting its hyperparameters) is one statement. Docstrings and imports do not count.
    """
    tree = ast.parse(path.read_text())
    runs = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            code = [
                stmt
                for stmt in body
                if not isinstance(stmt, (ast.Import, ast.ImportFrom))
                and not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
            ]
            texts = [ast.unparse(stmt) for stmt in code]
            for i in range(len(code) - window + 1):
                runs.append((code[i].lineno, tuple(texts[i : i + window])))
            for stmt, text in zip(code, texts, strict=True):
                compound = not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) and hasattr(
                    stmt, "body"
                )
                if compound and text.count("\n") + 1 >= window:
                    runs.append((stmt.lineno, (text,)))
    return runs


def test_no_six_lines_written_twice():
    window = 6
    seen: dict[tuple[str, ...], list[str]] = collections.defaultdict(list)
    for path in MODULES:
        for line, run in _statement_runs(path, window):
            seen[run].append(f"{path.relative_to(PACKAGE)}:{line}")
    repeated = {run: places for run, places in seen.items() if len(places) > 1}
    shown = [
        f"{' = '.join(places)}:\n    " + "\n    ".join(run) for run, places in repeated.items()
    ]
    assert not repeated, "the same six statements in two places:\n" + "\n".join(shown[:10])
