"""Sphinx configuration of the flr_nnx documentation.

Built with ``python -m sphinx -W -b html docs docs/_build/html`` (the test suite
does exactly that). Besides the usual settings, this file holds one check: every
public name of the public modules must appear, with a docstring, in the API
pages; otherwise the build warns, and ``-W`` turns that into a failure.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import sys
from collections.abc import Iterable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flr_nnx  # noqa: E402

project = "flr_nnx"
author = "The flr_nnx authors"
copyright = "2026, The flr_nnx authors"
release = flr_nnx.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# zoo_table.rst is a generated table without a title, included by optimizers.rst.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "zoo_table.rst"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"flr_nnx {release}"
html_theme_options = {"description": "Optimizers as small classes, for Flax NNX and optax."}

# A literal block (``::``) is never executed by the test suite, so it must not
# look like Python either: executable code goes in ``.. code-block:: python``.
highlight_language = "text"

autodoc_member_order = "bysource"
# Types go into the parameter lists, so that signatures stay short.
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False


def _public_modules() -> tuple[str, ...]:
    """``flr_nnx`` and its submodules whose names do not start with ``_``."""
    found = [m.name.split(".")[-1] for m in pkgutil.iter_modules(flr_nnx.__path__)]
    public = sorted(n for n in found if not n.startswith("_"))
    return ("flr_nnx", *(f"flr_nnx.{n}" for n in public))


# The modules whose namespaces are public API (see ``check_public_api``).
PUBLIC_MODULES = _public_modules()


def public_names(module: Any) -> list[str]:
    """The public names of a module's namespace: everything not starting with ``_``."""
    return sorted(name for name in vars(module) if not name.startswith("_"))


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def _own_doc(obj: Any) -> str:
    # Not inspect.getdoc: it falls back to a base class's docstring.
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return (doc or "").strip()


def find_undocumented(
    documented: Iterable[str], modules: Iterable[str] = PUBLIC_MODULES
) -> list[str]:
    """Problems with the API pages: public names missing from them or lacking a docstring.

    Args:
        documented: dotted names of every object the API pages describe (the
            Python domain's objects and modules).
        modules: the public modules to check.

    Returns:
        One message per problem, empty when every public name is documented. A
        name counts as documented when the same object appears in the API pages
        under any public path (``flr_nnx.from_optax`` is ``flr_nnx.compose.from_optax``).
    """
    documented = set(documented)
    seen = {id(obj) for obj in map(_resolve, documented) if obj is not None}
    problems = []
    for modname in modules:
        try:
            module = importlib.import_module(modname)
        except ImportError as error:
            problems.append(f"public module {modname} cannot be imported: {error}")
            continue
        for name in public_names(module):
            obj = getattr(module, name)
            dotted = f"{modname}.{name}"
            if dotted not in documented and id(obj) not in seen:
                problems.append(
                    f"{dotted} is public but missing from the API pages. Fix: add it to the "
                    f"page of {modname} in docs/api/ (e.g. `.. autoclass:: {name}` or "
                    f"`.. autofunction:: {name}`), or rename it with a leading underscore."
                )
            elif (inspect.isclass(obj) or inspect.isroutine(obj)) and not _own_doc(obj):
                problems.append(
                    f"{dotted} has no docstring. Fix: give it a Google-style docstring."
                )
    return problems


def check_public_api(app: Any, env: Any) -> None:
    from sphinx.util import logging

    domain = env.get_domain("py")
    documented = set(domain.objects) | set(domain.modules)
    for problem in find_undocumented(documented):
        logging.getLogger("flr_nnx.docs").warning(problem)


def setup(app: Any) -> dict[str, Any]:
    app.connect("env-check-consistency", check_public_api)
    return {"parallel_read_safe": True}
