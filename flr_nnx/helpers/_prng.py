"""PRNG keys as optax's noisy transformations take them (issue 14, batch J)."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp


def prng_key(key: Any = None, seed: int | None = None, *, stacklevel: int = 3) -> jax.Array:
    """A typed PRNG key from optax's ``key=`` / deprecated ``seed=`` arguments.

    As ``optax.noisy_sgd`` and ``optax.contrib.differentially_private_aggregate``
    take them: ``seed=`` warns that it is deprecated (and is an error together
    with ``key=``); without either it warns that a key will be required and uses 0. An
    integer is a seed, a typed key is kept (``optax``'s ``canonicalize_key``).

    Args:
        key: a PRNG key, an integer seed or None.
        seed: the deprecated spelling of ``key``.
        stacklevel: where the warnings point (the default: the caller's caller,
            the user constructing an optimizer).

    Example:
        >>> import jax
        >>> import flr_nnx as flr
        >>> key = flr.helpers.prng_key(3)
        >>> jax.random.key_data(key).tolist() == jax.random.key_data(jax.random.key(3)).tolist()
        True
    """
    if seed is not None:  # optax's deprecation, message and error included
        warnings.warn(
            '"seed" is deprecated and will be removed in optax 0.2.7, use "key".',
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        if key is not None:
            raise ValueError("Only one of seed or key can be specified.")
        key = seed
    if key is None:
        warnings.warn("Specifying a key will be required in optax 0.2.7.", stacklevel=stacklevel)
        key = 0
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.key(key)
