"""The hook contract's checks outside the engine: constructor arguments, what
``call_model`` returns, hyperparameter checks, and an optimizer used as optax."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flr_nnx._errors import ArgumentError, BridgeError, HookError, describe, did_you_mean

Key = tuple[str | int, ...]  # as flr_nnx._optimizer.Key (which imports this module)


# The constructors' checks of hyperparameters, by optimizer class name and attribute
# (registered by `flr_nnx.helpers.check_hyper`): applied again when a live one is set,
# and they tell which attributes are hyperparameters.
CHECKS: dict[tuple[str, str], Callable[[Any], None]] = {}


def register_check(optimizer: str, name: str, check: Callable[[Any], None]) -> None:
    """Remembers how ``optimizer``'s constructor checks hyperparameter ``name``."""
    CHECKS[(optimizer, name)] = check


def unannotated(parameters: Iterable[inspect.Parameter]) -> inspect.Signature:
    """A signature as an error message shows it: without annotations."""
    return inspect.Signature([p.replace(annotation=p.empty) for p in parameters])


def check_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """Wraps a subclass ``__init__`` so a bad call names the signature and a likely fix.

    The arguments are only inspected when the call fails with a ``TypeError``,
    so a correct construction costs nothing extra.
    """

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ArgumentError:
            raise
        except TypeError as error:
            try:
                inspect.signature(init).bind(self, *args, **kwargs)
            except TypeError as bad_call:
                raise argument_error(type(self), init, kwargs, bad_call) from error
            raise

    checked._flr_checked = True  # type: ignore[attr-defined]
    return checked


def argument_error(
    cls: type, init: Callable[..., None], kwargs: Mapping[str, Any], error: TypeError
) -> ArgumentError:
    signature = inspect.signature(init)
    accepted = [
        name
        for name, p in list(signature.parameters.items())[1:]
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    hint = ""
    unknown = [name for name in kwargs if name not in accepted]
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        hint = did_you_mean(unknown[0], accepted)
        problem = f"unknown keyword argument{'s' * (len(unknown) > 1)} {', '.join(unknown)}"
    else:
        problem = str(error)
    shown = unannotated(list(signature.parameters.values())[1:])
    # A subclass forwarding to its parent's __init__: name both.
    owner = init.__qualname__.rpartition(".")[0] or cls.__name__
    if owner.rpartition(".")[2] != cls.__name__:
        owner = f"{cls.__name__} -> {owner}"
    else:
        owner = cls.__name__
    return ArgumentError(
        f"{owner}{shown}: {problem}.{hint} Fix: call it as that signature says "
        f"(accepted arguments: {', '.join(accepted) or 'none'})."
    )


def check_model_grads(opt: Any, grads: Any, known: Mapping[Key, Any]) -> None:
    where = f"{type(opt).__name__}.call_model"
    if not isinstance(grads, Mapping):
        raise HookError(
            f"{where} returned {describe(grads)}; expected a dict from parameter key "
            "to gradient. Fix: return the (possibly modified) `grads` dict."
        )
    extra = [key for key in grads if key not in known]
    if extra:
        raise HookError(
            f"{where} returned keys that are not parameters: {extra[:5]}. "
            f"Known keys look like {list(known)[:3]}. Fix: only return keys of `grads`; "
            "leave a key out to skip that parameter this step."
        )
    for key, grad in grads.items():
        if not hasattr(grad, "shape") or not hasattr(grad, "dtype"):
            raise HookError(
                f"{where} returned {describe(grad)} for parameter {key}; expected an "
                "array. Fix: return JAX arrays as gradients."
            )
        expected = tuple(known[key].shape)
        if tuple(grad.shape) != expected or grad.dtype != known[key].dtype:
            raise HookError(
                f"{where} returned {describe(grad)} for parameter {key}; expected shape "
                f"{expected} and dtype {known[key].dtype} (those of its gradient). Fix: keep "
                "each gradient's shape and dtype (e.g. `.astype(grad.dtype)`), and avoid "
                "broadcasting it against state of another shape."
            )


def not_optax(opt: Any, method: str) -> BridgeError:
    name = type(opt).__name__
    return BridgeError(
        f"{name}.{method}() was called as if {name} were an optax transformation (by "
        "nnx.Optimizer, optax.chain, optax.MultiSteps or similar), but it is a hook "
        "optimizer. Fix: wrap it: flr.as_optax(opt), or use flr.NNXOptimizer(model, opt, "
        "wrt=nnx.Param) instead of nnx.Optimizer."
    )
