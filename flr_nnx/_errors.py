"""Exceptions raised by flr_nnx.

Every message names where the problem is (the parameter key or the optimizer
attribute), what was expected, what was received, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


class FlrError(Exception):
    """Base class of every error raised by flr_nnx."""


class HookError(FlrError, TypeError):
    """A hook returned something the engine cannot use (wrong type, shape or dtype)."""


class StateError(FlrError, ValueError):
    """Optimizer state was created, lost or changed shape/dtype after ``init``."""


class TransientReadError(StateError, AttributeError):
    """A hook read a ``transient`` attribute before assigning it in this step.

    It is also an ``AttributeError``, so ``hasattr`` and ``getattr`` with a
    default behave as for any missing attribute.
    """


class StructureError(FlrError, ValueError):
    """Gradients or parameters do not match the structure seen at ``init``."""


class MissingArgumentError(FlrError, TypeError):
    """A hook read ``params`` or ``loss`` but the caller did not provide it."""


class HyperparameterError(FlrError, ValueError):
    """An optimizer was constructed with an invalid hyperparameter."""


class ArgumentError(HyperparameterError, TypeError):
    """An optimizer was constructed with arguments its ``__init__`` does not accept.

    An unknown keyword (with a "did you mean" hint), a missing required
    argument, or too many positional arguments.

    It is also a ``TypeError``, the exception Python raises for a bad call, so
    code that catches either keeps working. :class:`~flr_nnx.NNXOptimizer` raises
    it too, for a call without ``wrt`` or an ``update`` without the model.
    """


class TracerLeakError(FlrError, RuntimeError):
    """A hook stored a traced value somewhere the engine does not manage."""


class ComplexParameterError(FlrError, ValueError):
    """A complex parameter reached a step that is not defined for complex numbers.

    For example clipping (complex numbers have no order), or a real ``mu_dtype``
    that would silently drop the imaginary part of a complex moment. It is a
    ``ValueError``, as optax's own refusals of complex numbers are.
    """


# Spellings of the same hyperparameter across libraries and papers.
_SYNONYMS = [
    {"lr", "learning_rate", "eta", "η", "step_size", "alpha"},
    {"b1", "beta1", "beta_1", "β1", "momentum"},
    {"b2", "beta2", "beta_2", "β2"},
    {"eps", "epsilon", "ε"},
    {"weight_decay", "wd", "λ", "decay"},
]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A " Did you mean ...?" hint for a misspelt ``name``, or ``""``.

    Example:
        >>> did_you_mean("beta1", ["learning_rate", "b1", "b2"])
        ' Did you mean `b1`?'
        >>> did_you_mean("lr", ["η", "β1"])
        ' Did you mean `η`?'
    """
    choices = list(choices)
    for group in _SYNONYMS:
        if name in group:
            same = [choice for choice in choices if choice in group]
            if same:
                return f" Did you mean `{same[0]}`?"
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean `{close[0]}`?" if close else ""


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        # JAX's own class names (ArrayImpl, DynamicJaxprTracer) mean nothing to a user.
        kind = "NumPy array" if isinstance(value, np.ndarray) else "array"
        if not isinstance(value, (np.ndarray, jax.Array)):
            kind = type(value).__name__
        return f"{kind} of shape {tuple(shape)} and dtype {dtype}"
    if value is None:
        return "None"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


class Missing:
    """Stands in for ``params`` or ``loss`` when the caller did not pass them.

    Any use raises :class:`MissingArgumentError` explaining how to pass the value,
    instead of a confusing error deep inside JAX.
    """

    def __init__(self, name: str, fix: str, reader: str = "This optimizer"):
        self._name = name
        self._fix = fix
        self._reader = reader

    def _fail(self, *_: Any, **__: Any) -> Any:
        raise self.error()

    def __repr__(self) -> str:
        return f"<missing {self._name}>"

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("_name", "_fix", "_reader", "error"):
            raise AttributeError(attr)
        return self._fail()

    # No __jax_array__: JAX rejects it while tracing with its own error, whereas
    # without it JAX's TypeError names this class and the engine re-raises it as
    # a MissingArgumentError (see ``flr_nnx._engine.call_hooks``).
    __array__ = __bool__ = __float__ = __int__ = __index__ = __contains__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _fail
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __neg__ = __abs__ = _fail
    __matmul__ = __rmatmul__ = __lt__ = __le__ = __gt__ = __ge__ = _fail
    __iter__ = __len__ = __call__ = __eq__ = __ne__ = _fail
    __hash__ = object.__hash__  # as a dict's value or in a set, it is not used

    def error(self) -> MissingArgumentError:
        """The error explaining that this value is missing and how to pass it."""
        return MissingArgumentError(
            f"{self._reader} reads `{self._name}`, but it was not provided to this step. "
            f"Fix: {self._fix}"
        )

    def __getitem__(self, key: Any) -> Missing:
        # ``params[key]`` is fine; using the result is the error.
        return self


class BridgeError(FlrError, TypeError):
    """A hook optimizer and an optax transformation were mixed up.

    A hook optimizer was given where an optax transformation is expected
    (``nnx.Optimizer``, ``optax.chain``, ``optax.MultiSteps``), an optax
    transformation where a hook optimizer is expected (:func:`~flr_nnx.as_optax`),
    or the two were swapped in :func:`flr_nnx.testing.assert_matches`. The
    message names the function to use. It is also a ``TypeError``, as a wrong
    argument type is in Python.
    """
