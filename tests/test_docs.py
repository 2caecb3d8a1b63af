"""The documentation builds without warnings and every code block in it runs.

- ``python -m sphinx -W`` builds ``docs/`` (warnings are errors, and ``docs/conf.py``
  warns about public names missing from the API pages).
- Every ``.. code-block:: python`` of every page runs, in order, one namespace per
  page. Blocks meant not to run are ``text`` or ``console`` blocks.
- The README's first fenced block is the two install-and-run commands, and its Python
  blocks run too.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import textwrap

import pytest
from _subprocess import python_env, run_python

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)

# A directive that shows code; only ``python`` ones run, and Python must not hide
# behind another name where it would silently not run.
_DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\. (?:code-block|code|sourcecode)::\s*(?P<lang>\S*)\s*$"
)
_NOT_RUN = {"text", "console", "bash", "shell", "none", "rst", "toml", "ini", "yaml", "json"}


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line number, language, code)`` of every code directive in reST ``text``."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        i += 1
        if not match:
            continue
        start, indent = i, len(match["indent"])
        body: list[str] = []
        # Options (``:caption: ...``) come first, then the indented body.
        while i < len(lines) and re.match(r"^\s+:[\w-]+:", lines[i]):
            i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        blocks.append((start, match["lang"], textwrap.dedent("\n".join(body)).strip("\n")))
    return blocks


def test_code_blocks_are_found():
    text = textwrap.dedent(
        """
        Title
        =====

        .. code-block:: python
           :caption: demo

           x = 1

           y = x + 1

        Some text.

            .. code-block:: text

               not run
        """
    )
    assert code_blocks(text) == [(5, "python", "x = 1\n\ny = x + 1"), (14, "text", "not run")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_blocks_run(page, tmp_path, monkeypatch):
    blocks = code_blocks(page.read_text(encoding="utf-8"))
    for line, lang, _ in blocks:
        assert lang == "python" or lang in _NOT_RUN, (
            f"{page.relative_to(ROOT)}:{line}: code block language {lang!r}. Fix: use "
            "`python` for code that runs, or one of " + ", ".join(sorted(_NOT_RUN))
        )
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace = {"__name__": f"docs.{page.stem}"}
    for line, lang, code in blocks:
        if lang != "python":
            continue
        source = compile(code, f"{page.relative_to(ROOT)}:{line}", "exec")
        exec(source, namespace)


def test_docs_build_without_warnings(tmp_path):
    env = python_env(JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore::DeprecationWarning")
    result = run_python(
        [
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-E",
            "-b",
            "html",
            str(DOCS),
            str(tmp_path / "html"),
        ],
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "api" / "optim.html").exists()


def _conf():
    spec = importlib.util.spec_from_file_location("flr_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_undocumented_public_name_fails_the_build():
    conf = _conf()
    everything = [
        f"{m}.{n}"
        for m in conf.PUBLIC_MODULES
        for n in conf.public_names(importlib.import_module(m))
    ]
    assert conf.find_undocumented(everything) == []
    problems = conf.find_undocumented([n for n in everything if not n.endswith(".as_optax")])
    assert len(problems) == 1 and "flr_nnx.as_optax is public but missing" in problems[0]


def _fenced(markdown: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", markdown, flags=re.M | re.S)


def test_readme_commands_and_quickstart(tmp_path, monkeypatch):
    blocks = _fenced((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks[0] == (
        "bash",
        'pip install -e ".[examples]" && python examples/quickstart.py\n'
        'pip install -e ".[test]" && pytest\n',
    )
    python = [code for lang, code in blocks if lang == "python"]
    assert python, "the README has no Python quickstart"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for code in python:
        exec(compile(code, "README.md", "exec"), namespace)
