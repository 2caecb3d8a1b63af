"""A subclass that only changes its parent's defaults, without restating the signature."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def with_defaults(
    init: Callable[..., None], /, *, positional: tuple[str, ...] = (), **defaults: Any
) -> Callable[..., None]:
    """An ``__init__`` that is ``init`` with other defaults, and says so in its signature.

    ``inspect.signature`` (help, error messages, ``optax.inject_hyperparams``)
    shows the parent's arguments with the new defaults, annotations resolved.

    Args:
        init: the parent's ``__init__``.
        positional: keyword-only arguments of ``init`` that may also be passed by
            position, in this order, after the others (to follow an optax twin's order).
        **defaults: the new defaults, by argument name.

    Returns:
        A function to assign as the subclass's ``__init__``.

    Example:
        >>> import inspect
        >>> import flr_nnx as flr
        >>> class Heavy(flr.optim.SGD):
        ...     __init__ = flr.helpers.with_defaults(flr.optim.SGD.__init__, momentum=0.99)
        >>> inspect.signature(Heavy).parameters["momentum"].default
        0.99
        >>> Heavy(0.1).momentum
        0.99
    """
    parameters = list(inspect.signature(init, eval_str=True).parameters.values())
    for name in positional:
        index = next(i for i, p in enumerate(parameters) if p.kind is p.KEYWORD_ONLY)
        moved = next(p for p in parameters if p.name == name)
        parameters.remove(moved)
        parameters.insert(index, moved.replace(kind=moved.POSITIONAL_OR_KEYWORD))
    parameters = [p.replace(default=defaults.get(p.name, p.default)) for p in parameters]
    signature = inspect.Signature(parameters)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        init(arguments.pop("self"), **arguments)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__doc__ = init.__doc__
    # No owner in the name: error messages then name the class that uses it.
    __init__.__qualname__ = "__init__"
    return __init__
