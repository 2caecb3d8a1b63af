"""Masks: which parameters a transformation applies to (e.g. weight decay).

A ``mask`` argument accepts what optax accepts, plus a predicate on the key:

- ``None``: every parameter.
- a pytree of bools shaped like the parameters, or a prefix of them
  (``{"encoder": True, "head": False}``);
- a callable of the parameters returning such a pytree (optax's convention);
- :func:`key_mask` of a predicate on the parameter key, e.g.
  ``key_mask(lambda key: key[-1] not in ("bias", "scale"))`` for "no weight
  decay on biases and norms".

A plain callable is always treated the optax way (called with a pytree). A
predicate on the key must be wrapped in :func:`key_mask`: that is what tells
the two apart, without inspecting the callable's signature. The wrapper is
itself a valid optax mask, so the same object can be given to
``optax.adamw(mask=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

from flr_nnx._errors import HyperparameterError, StructureError, describe
from flr_nnx._optimizer import Key
from flr_nnx._tree import flatten, group_by_head
from flr_nnx._tree import key_of as _key_of


class KeyMask:
    """A mask given as a predicate on the parameter key.

    Create it with :func:`key_mask`. Calling it on a pytree returns the pytree
    of bools that optax expects, so it is a valid ``mask`` for optax too.

    Attributes:
        predicate: a callable from a key (a tuple such as
            ``('layers', 0, 'bias')``) to a bool.
    """

    __slots__ = ("predicate",)

    def __init__(self, predicate: Callable[[Key], bool]):
        if not callable(predicate):
            raise HyperparameterError(
                f"key_mask(predicate={describe(predicate)}): expected a callable from a "
                "parameter key (a tuple like ('layers', 0, 'bias')) to a bool. "
                "Fix: pass e.g. `lambda key: key[-1] != 'bias'`."
            )
        self.predicate = predicate

    def decide(self, key: Key) -> bool:
        """Whether the parameter with key ``key`` is selected."""
        return _as_bool(self.predicate(key), f"key_mask predicate for parameter {key}")

    def __call__(self, tree: Any) -> Any:
        """The pytree of bools for ``tree`` (optax's mask convention)."""
        return jax.tree_util.tree_map_with_path(lambda path, _: self.decide(key_of(path)), tree)

    def __repr__(self) -> str:
        return f"key_mask({self.predicate!r})"


def key_mask(predicate: Callable[[Key], bool]) -> KeyMask:
    """A mask from a predicate on the parameter key.

    A bare callable given as a ``mask`` is always treated the optax way: called
    with the parameter tree, it returns a tree of bools. A predicate on the key
    must be wrapped in ``key_mask`` so it is told apart; nothing (such as the
    callable's signature) is inspected.

    Args:
        predicate: called with each parameter's key, a tuple of its path parts
            (dict keys, attribute names and list indices), e.g.
            ``('layers', 0, 'bias')``; returns whether the parameter is selected.

    Returns:
        A :class:`KeyMask`, accepted by every ``mask`` argument of
        ``flr_nnx.optim`` and by optax's ``mask`` arguments alike.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> no_bias = flr.helpers.key_mask(lambda key: key[-1] != "bias")
        >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
        >>> no_bias(params)
        {'dense': {'bias': False, 'kernel': True}}
        >>> sorted(flr.helpers.Mask(no_bias).select({("dense", "kernel"): 0, ("dense", "bias"): 0}))
        [('dense', 'kernel')]
    """
    return KeyMask(predicate)


MaskLike = Any
"""``None``, a pytree of bools (or a prefix), a callable of the params, or a :class:`KeyMask`."""


class Mask:
    """A normalized ``mask`` argument, for use inside hook optimizers.

    Store it on the optimizer in ``__init__`` (it is static configuration,
    never state) and call :meth:`select` in ``call_model``:

    .. code-block:: python

        self.mask = flr.helpers.Mask(mask)
        ...
        def call_model(self, grads, **_):
            self.selected = self.mask.select(grads)
            return grads

    Args:
        mask: ``None`` (every parameter), a pytree of bools shaped like the
            parameters or a prefix of them, a callable of the parameters
            returning such a pytree (optax's convention), or a :class:`KeyMask`
            (see :func:`key_mask`). A ``Mask`` is accepted too. A bare callable
            is always called the optax way, with the parameter tree; a predicate
            on the key must be wrapped in :func:`key_mask`.
    """

    __slots__ = ("spec",)

    def __init__(self, mask: MaskLike = None):
        if isinstance(mask, Mask):
            mask = mask.spec
        if mask is not None and not callable(mask):
            keys, leaves, _ = flatten(mask)
            for key, leaf in zip(keys, leaves, strict=True):
                _as_bool(leaf, f"mask entry {key}")
        self.spec = mask

    def select(self, tree: Mapping[Key, Any]) -> frozenset[Key]:
        """The keys of ``tree`` that the mask selects.

        Args:
            tree: a flat dict from parameter key to array, as the hooks see
                gradients and parameters. An optax-style callable is called
                with it rebuilt as nested containers (see :func:`unflatten`),
                as ``optax.masked`` calls it with the updates.

        Returns:
            The selected keys.

        Raises:
            StructureError: if a pytree mask has no entry for some key.
            HyperparameterError: if a mask value is not a static bool.
        """
        mask = self.spec
        if mask is None:
            return frozenset(tree)
        if isinstance(mask, KeyMask):
            return frozenset(key for key in tree if mask.decide(key))
        if callable(mask):
            mask = mask(unflatten(tree))
        keys, leaves, _ = flatten(mask)
        by_key = dict(zip(keys, leaves, strict=True))
        selected = []
        for key in tree:
            for n in range(len(key), -1, -1):
                if key[:n] in by_key:
                    if _as_bool(by_key[key[:n]], f"mask entry {key[:n]}"):
                        selected.append(key)
                    break
            else:
                raise StructureError(
                    f"The mask has no entry for parameter {key}; mask entries look like "
                    f"{list(by_key)[:3]}. Fix: give the mask the structure of the parameters "
                    "(or a prefix of it), or use `flr.helpers.key_mask(lambda key: ...)`."
                )
        return frozenset(selected)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and other.spec is self.spec

    def __hash__(self) -> int:
        return id(self.spec)

    def __repr__(self) -> str:
        return f"Mask({self.spec!r})"


def key_of(path: tuple[Any, ...]) -> Key:
    """The key a hook sees for the leaf at a JAX key path (from ``tree_flatten_with_path``).

    Dict keys, attribute names and sequence indices become the parts of a plain
    tuple; a Flax Variable's trailing ``.value`` is dropped.

    Args:
        path: a JAX key path.

    Returns:
        The parameter's key, as in the hooks' ``grads``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tree = {"layers": [{"kernel": jnp.ones(2)}]}
        >>> [flr.helpers.key_of(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
        [('layers', 0, 'kernel')]
    """
    return _key_of(path)


def unflatten(flat: Mapping[Key, Any]) -> Any:
    """Rebuilds nested containers from a flat dict keyed by path tuples.

    The result has the same keys (as :func:`flr_nnx._tree.flatten` reads them)
    as the original tree: a level whose parts are the integers ``0..n-1`` becomes
    a list, a level of only strings or only integers a dict, and a level that
    mixes both (which JAX cannot sort as dict keys) a mapping that keeps
    insertion order.

    Example:
        >>> from flr_nnx.helpers._mask import unflatten
        >>> unflatten({("out", 0): 1.0, ("out", 1): 2.0, ("w",): 3.0})
        {'out': [1.0, 2.0], 'w': 3.0}
    """
    if () in flat:
        return flat[()]
    children = {part: unflatten(sub) for part, sub in group_by_head(flat).items()}
    parts = list(children)
    ints = [p for p in parts if isinstance(p, int) and not isinstance(p, bool)]
    if len(ints) == len(parts) and sorted(ints) == list(range(len(ints))):
        return [children[i] for i in range(len(ints))]
    if not ints or len(ints) == len(parts):
        return children
    return OrderedNode(children)


@jax.tree_util.register_pytree_with_keys_class
class OrderedNode(Mapping):
    """A read-only mapping whose children JAX visits in insertion order.

    Stands in for a level of the parameter tree that mixes string and integer
    parts, which a plain dict cannot hold as a pytree (JAX sorts dict keys).
    """

    def __init__(self, children: Mapping[Any, Any]):
        self._children = dict(children)

    def __getitem__(self, part: Any) -> Any:
        return self._children[part]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._children)

    def __len__(self) -> int:
        return len(self._children)

    def tree_flatten_with_keys(self) -> tuple[list[tuple[Any, Any]], tuple[Any, ...]]:
        parts = tuple(self._children)
        return [(jax.tree_util.DictKey(p), self._children[p]) for p in parts], parts

    @classmethod
    def tree_unflatten(cls, parts: tuple[Any, ...], children: Any) -> OrderedNode:
        return cls(dict(zip(parts, children, strict=True)))

    def __repr__(self) -> str:
        return f"OrderedNode({self._children!r})"


def _as_bool(value: Any, where: str) -> bool:
    try:
        return bool(value)
    except jax.errors.ConcretizationTypeError:
        problem = "a traced value"
    except (TypeError, ValueError):
        problem = describe(value)
    raise HyperparameterError(
        f"The {where} is {problem}; expected a static Python bool (masks decide at "
        "trace time which parameters are transformed). Fix: use Python bools, "
        "e.g. `jax.tree.map(lambda x: x.ndim > 1, params)`."
    )
