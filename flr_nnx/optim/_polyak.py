"""SGD with Polyak's step size, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx._errors import HyperparameterError
from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    advance,
    needs_count,
    scale,
    set_hypers,
    sum_of_squares,
)


class PolyakSGD(Optimizer):
    r"""SGD with Polyak's step size (Loizou et al., 2021), the twin of ``optax.polyak_sgd``.

    .. math::

        u_t &= s_t \, g_t, \qquad
        \gamma_t = \min\!\left(\frac{f(\theta_t) - f^\star}{\|u_t\|^2 + \epsilon},\;
            \gamma_{\max}\right) \\
        \Delta\theta_t &= \gamma_t \, u_t
            \quad (0 \text{ where } \|u_t\|^2 + \epsilon \le \epsilon_{\mathrm{mach}})

    :math:`\|u_t\|` is the norm over all parameters. With ``variant='sps+'`` the gap
    :math:`f(\theta_t) - f^\star` is clipped at 0. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Reads the loss :math:`f(\theta_t)`: pass it as
    ``loss=`` to ``NNXOptimizer.update`` or as ``value=`` to the optax ``update``.
    Bit-identical to ``optax.polyak_sgd`` under ``jit``.

    Args:
        max_learning_rate: :math:`\gamma_{\max}`, the largest step size.
        scaling: :math:`s`, scales the gradient first; a float or a schedule.
        f_min: :math:`f^\star`, a lower bound on the loss.
        eps: :math:`\epsilon`, added to the denominator.
        variant: ``'sps'`` or ``'sps+'``.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.PolyakSGD())
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> loss = 0.5 * jnp.sum(params["w"] ** 2)  # gradient: params["w"]
        >>> updates, _ = tx.update(params, tx.init(params), params, value=loss)
        >>> updates["w"]  # a step of 2.5 / 5 = 0.5 along the gradient
        Array([-0.5,  1. ], dtype=float32)
    """

    transient = ("step_size",)

    def __init__(
        self,
        max_learning_rate: float = 1.0,
        scaling: ScalarOrSchedule = 1.0,
        f_min: float = 0.0,
        eps: float = 0.0,
        variant: str = "sps",
    ):
        set_hypers(self, max_learning_rate=max_learning_rate, scaling=scaling, eps=eps)
        if variant not in ("sps", "sps+"):
            raise HyperparameterError(
                f"{type(self).__name__}(variant={variant!r}): expected 'sps' or 'sps+', "
                f"got {variant!r}. "
                "Fix: pass variant='sps' (plain Polyak step) or 'sps+' (gap clipped at 0)."
            )
        self.f_min, self.variant = f_min, variant
        if needs_count(scaling):
            self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, loss, **_):
        scaling = advance(self, self.scaling)
        descent = {key: scale(-scaling, grad) for key, grad in grads.items()}
        grads = {key: scale(scaling, grad) for key, grad in grads.items()}
        # The squared norm is summed per leaf, then across leaves from 0 in key
        # order, as optax.tree.norm does, so the step size is bit-identical. Like
        # optax, it is the norm of the descent direction -scaling * g: the same
        # number, but for a complex g XLA sums the negated array in another order
        # (1 ulp at times), so the norm of +g would not be bit-identical.
        sq_norm = sum_of_squares(descent.values())
        gap = jnp.asarray(loss - self.f_min).astype(sq_norm.dtype)
        if self.variant == "sps+":
            gap = jnp.maximum(gap, 0)
        self.step_size = jnp.where(
            sq_norm + self.eps <= jnp.finfo(float).eps,
            jnp.array(0.0),
            jnp.minimum(gap / (sq_norm + self.eps), self.max_learning_rate),
        )
        return grads

    def call_param(self, grad, **_):
        return (self.step_size * grad).astype(grad.dtype)
