"""Complex parameters as pairs of real ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Key, Optimizer, call


def _split(tree: Mapping[Key, jax.Array]) -> dict[Key, jax.Array]:
    """Splits each complex array into two real ones, in its place.

    Keyed ``(*key, 'real')`` and ``(*key, 'imaginary')``, optax's field names.
    """
    out = {}
    for key, x in tree.items():
        if jnp.iscomplexobj(x):
            out[(*key, "real")], out[(*key, "imaginary")] = x.real, x.imag
        else:
            out[key] = x
    return out


class SplitRealAndImaginary(Optimizer):
    r"""Runs ``inner`` on the real and imaginary parts of complex parameters as two real ones.

    The twin of ``optax.contrib.split_real_and_imaginary`` (bit-identical under
    ``jit``). A complex parameter :math:`z = x + iy` with gradient
    :math:`g = g_x + i g_y` is seen by the inner optimizer as two real
    parameters, keyed ``key + ('real',)`` and ``key + ('imaginary',)`` (optax's
    field names) in the place of ``key``; real parameters pass through:

    .. math::

        u_z = \mathrm{inner}(g_x) + \mathrm{inner}(g_y) \, i

    So an optimizer whose state or arithmetic is defined for real numbers only
    (an order, a maximum, a real state dtype) works on complex parameters as it
    would on twice as many real ones.

    Args:
        inner: the inner optimizer.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.SplitRealAndImaginary(flr.optim.Adam(0.1)))
        >>> params = {"z": jnp.array([1.0 + 2.0j])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"z": jnp.array([0.5 - 0.5j])}, state, params)
        >>> updates["z"]
        Array([-0.09999933+0.09999933j], dtype=complex64)
        >>> sorted(state.tree["inner"]["mu"]["z"])
        ['imaginary', 'real']
    """

    def __init__(self, inner: Optimizer):
        self.inner = inner

    def __call__(
        self,
        loss: Any,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        nnx_variables: Any = None,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        if isinstance(params, Mapping):
            params = _split({k: params[k] for k in grads})
        steps = call(self.inner, loss=loss, grads=_split(grads), params=params, **extra)
        updates = {}
        for key, g in grads.items():
            if not jnp.iscomplexobj(g):
                if key in steps:
                    updates[key] = steps[key]
                continue
            re, im = steps.get((*key, "real")), steps.get((*key, "imaginary"))
            if re is not None or im is not None:  # a key the inner one left out stays out
                re = jnp.zeros_like(g.real) if re is None else re
                im = jnp.zeros_like(g.imag) if im is None else im
                updates[key] = re + im * 1j
        return updates

    passes_eval_params_on = True  # no evaluation point of its own: the inner one's

    def eval_params(self, params: Mapping[Key, jax.Array]) -> dict[Key, jax.Array]:
        """The inner optimizer's evaluation point on the real pairs, recombined."""
        point = self.inner.eval_params(_split(params))
        out = {}
        for key, p in params.items():
            if jnp.iscomplexobj(p):
                out[key] = (point[(*key, "real")] + point[(*key, "imaginary")] * 1j).astype(p.dtype)
            else:
                out[key] = point[key]
        return out
