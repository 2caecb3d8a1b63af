"""The hook contract's checks outside the engine: constructor arguments, what
``call_model`` returns, hyperparameter checks, and an optimizer used as optax."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flr_nnx._errors import (
    ArgumentError,
    BridgeError,
    HookError,
    StructureError,
    describe,
    did_you_mean,
)

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


def signature_problem(target: Callable[..., Any], kwargs: Mapping[str, Any]) -> HookError | None:
    """The error for calling hook ``target`` with ``kwargs`` when its signature cannot take
    them, or None (the ``TypeError`` came from inside the hook).

    Args:
        target: what runs (a hook method, or an optimizer's ``__call__``).
        kwargs: the keyword arguments it was called with.
    """
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(**kwargs)
    except TypeError as bad:
        owner = getattr(target, "__qualname__", repr(target))
        shown = unannotated(signature.parameters.values())
        return HookError(
            f"{owner}{shown} cannot be called as the engine calls it, with the keyword "
            f"arguments {', '.join(f'{k}=' for k in kwargs)} ({bad}). Hooks are called with "
            "keyword arguments, under these names. Fix: name the parameters as the base class "
            "does and end the signature with `**_` to accept the ones you do not use, e.g. "
            "`def call_param(self, key, grad, **_)`, `def call_model(self, grads, **_)`, "
            "`def __call__(self, loss, grads, params, **extra)`."
        )
    return None


def check_model_grads(
    opt: Any, grads: Any, known: Mapping[Key, Any], per_example: bool = False
) -> None:
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
        # Per-example gradients come in with a batch axis and leave aggregated.
        expected = tuple(known[key].shape)[1 if per_example else 0 :]
        if tuple(grad.shape) != expected or grad.dtype != known[key].dtype:
            those = "its parameter's" if per_example else "those of its gradient"
            raise HookError(
                f"{where} returned {describe(grad)} for parameter {key}; expected shape "
                f"{expected} and dtype {known[key].dtype} ({those}). Fix: keep "
                "each gradient's shape and dtype (e.g. `.astype(grad.dtype)`), and avoid "
                "broadcasting it against state of another shape."
            )


PER_EXAMPLE_FIX = (
    "compute one gradient per example with a leading batch axis, e.g. "
    "`jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, batch)` (with nnx: "
    "`nnx.vmap(nnx.grad(loss), in_axes=(None, 0))(model, batch)`)"
)


def per_example_mismatch(
    name: str, key: Key, shape: tuple[int, ...], got: tuple[int, ...], per_example: bool
) -> str | None:
    """The message for a gradient of the wrong kind (per-example or not), or None.

    Args:
        name: the optimizer's class name.
        key: the parameter's key.
        shape: the parameter's shape.
        got: the gradient's shape.
        per_example: whether the optimizer takes per-example gradients.
    """
    if per_example and (len(got) != len(shape) + 1 or got[1:] != shape):
        batched = "(batch" + "".join(f", {n}" for n in shape) + ("," if not shape else "") + ")"
        return (
            f"{name} takes per-example gradients (it declares `per_example_grads = True`): "
            f"parameter {key} has shape {shape}, so its gradient must have shape "
            f"{batched}; it has shape {got}. Fix: {PER_EXAMPLE_FIX}; a wrapper "
            "gives it those only if it takes them itself (flr.compose.Chain with it as "
            "the first link does; MultiSteps and other accumulating wrappers do not)."
        )
    if not per_example and len(got) == len(shape) + 1 and got[1:] == shape:
        return (
            f"The gradient of parameter {key} has shape {got}: one more leading axis than "
            f"the parameter's {shape}, as per-example gradients have, but {name} takes one "
            "gradient per parameter (it does not declare `per_example_grads = True`). Fix: "
            "average them over the batch (`jax.tree.map(lambda g: g.mean(0), grads)`), or "
            "use an optimizer that reads per-example gradients (flr.optim.DPSGD, or a "
            "Chain that starts with one)."
        )
    return None


def check_per_example_grads(opt: Any, grads: Mapping[Key, Any], params: Any) -> None:
    """Refuses gradients without the batch axis an optimizer that declares it needs.

    Checked where the parameters are known (``params`` a mapping); otherwise the
    engine checked the outermost optimizer's gradients against the state's shapes.
    """
    if not isinstance(params, Mapping):
        return
    for key, grad in grads.items():
        if key in params:
            shape, got = tuple(params[key].shape), tuple(grad.shape)
            message = per_example_mismatch(type(opt).__name__, key, shape, got, True)
            if message:
                raise StructureError(message)


def not_optax(opt: Any, method: str) -> BridgeError:
    name = type(opt).__name__
    return BridgeError(
        f"{name}.{method}() was called as if {name} were an optax transformation (by "
        "nnx.Optimizer, optax.chain, optax.MultiSteps or similar), but it is a hook "
        "optimizer. Fix: wrap it: flr.as_optax(opt), or use flr.NNXOptimizer(model, opt, "
        "wrt=nnx.Param) instead of nnx.Optimizer."
    )
