"""DoG and DoWG, the parameter-free step sizes, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from flr_nnx._errors import HyperparameterError
from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    advance,
    cast,
    decayed,
    needs_count,
    scale,
    set_hypers,
)

_INIT_STEPS = ("distance", "learning_rate", "heuristic")


class _DistanceOverGradients(Optimizer):
    r"""What DoG and DoWG share: optional weight decay, the initial parameters, a global step size.

    A subclass computes its step size :math:`\gamma_t` from ``grads`` and the
    distance travelled in :meth:`step_size`; the update is :math:`\eta_t \gamma_t g_t`.
    """

    transient = ("lr_t", "gamma")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        eps: float,
        weight_decay: float | None,
        mask: MaskLike,
    ):
        set_hypers(self, learning_rate=learning_rate, eps=eps, weight_decay=weight_decay)
        self.mask = Mask(mask)
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)
        self.init_params: dict = {}

    def call_model(self, grads, params, **_):
        if self.weight_decay is not None:  # optax.add_decayed_weights, before the step size
            keys = decayed(self.weight_decay, self.mask, grads)
            grads = {
                k: g + self.weight_decay * params[k] if k in keys else g for k, g in grads.items()
            }
        for key in grads:
            if key not in self.init_params:  # the state starts at the initial parameters
                self.init_params[key] = params[key]
        # Norms over all parameters, summed in key order as optax.tree.norm sums its leaves.
        dtype = optax.tree.dtype(list(params.values()), "lowest")
        moved = [self.init_params[k] - params[k] for k in grads]
        self.gamma = self.step_size(list(grads.values()), moved, list(params.values()), dtype)
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def step_size(self, grads: list, moved: list, params: list, dtype: Any) -> Any:
        """:math:`\\gamma_t` from the gradients and ``moved`` (initial minus current parameters)."""
        raise NotImplementedError

    def call_param(self, grad, **_):
        return cast(scale(self.lr_t, self.gamma * grad), grad.dtype)


class DoG(_DistanceOverGradients):
    r"""Distance over Gradients (Ivgi et al., 2023), the twin of ``optax.contrib.dog``.

    .. math::

        \bar r_t &= \max\left(\bar r_{t-1}, \|\theta_0 - \theta_t\|\right), \qquad
        G_t = G_{t-1} + \|g_t\|^2 \\
        \Delta\theta_t &= \eta_t \, \frac{\bar r_t}{\sqrt{G_t + \epsilon}} \, g_t

    Norms are over all parameters. :math:`\bar r_0` is set by ``init_step``:
    ``("distance", r)`` gives :math:`r`; ``("heuristic", c)`` gives
    :math:`c (1 + \|\theta_0\|)`; ``("learning_rate", \gamma)`` takes :math:`\gamma`
    as the first step size (then :math:`\bar r_0 = 0`). With ``weight_decay``,
    :math:`g_t` is :math:`g_t + \lambda \theta_t` for the parameters ``mask``
    selects. The parameter becomes :math:`\theta_t - \Delta\theta_t`.
    Bit-identical to ``optax.contrib.dog`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (1 keeps DoG's own step).
        init_step: ``(kind, value)``, kind one of ``"distance"``, ``"learning_rate"``,
            ``"heuristic"``.
        eps: :math:`\epsilon`, added under the square root.
        weight_decay: :math:`\lambda`, or ``None`` for none.
        mask: which parameters are decayed (as :class:`AdamW`'s ``mask``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.DoG(init_step=("learning_rate", 0.1)))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.05,  0.05], dtype=float32)
    """

    def __init__(
        self,
        learning_rate: ScalarOrSchedule = 1.0,
        init_step: tuple[str, float] = ("heuristic", 1e-6),
        eps: float = 1e-8,
        weight_decay: float | None = None,
        mask: MaskLike = None,
    ):
        super().__init__(learning_rate, eps, weight_decay, mask)
        kind, value = init_step
        if kind not in _INIT_STEPS:
            raise HyperparameterError(
                f"DoG(init_step={init_step!r}): expected its kind in {_INIT_STEPS}, got "
                f"{kind!r}. Fix: pass e.g. init_step=('heuristic', 1e-6)."
            )
        self.init_step = (kind, value)
        self.is_init_step = jnp.asarray(True)
        self.max_dist = None  # created at the first step, from the initial parameters
        self.sum_sq_norm_grads = None

    def step_size(self, grads, moved, params, dtype):
        kind, value = self.init_step
        if self.max_dist is None:
            r_eps = {"distance": value, "learning_rate": 0.0}.get(kind)
            if kind == "heuristic":
                r_eps = value * (1 + optax.tree.norm(params))
            self.max_dist = jnp.asarray(r_eps, dtype=dtype)
            self.sum_sq_norm_grads = jnp.asarray(0.0, dtype=dtype)
        self.max_dist = jnp.maximum(self.max_dist, optax.tree.norm(moved))
        self.sum_sq_norm_grads = self.sum_sq_norm_grads + optax.tree.norm(grads, squared=True)
        gamma = self.max_dist / jnp.sqrt(self.sum_sq_norm_grads + self.eps)
        if kind == "learning_rate":
            gamma = jnp.where(self.is_init_step, value, gamma)
        self.is_init_step = jnp.asarray(False)
        return gamma


class DoWG(_DistanceOverGradients):
    r"""Distance over Weighted Gradients (Khaled et al., 2023), the twin of ``optax.contrib.dowg``.

    .. math::

        \bar r_t^2 &= \max\left(\bar r_{t-1}^2, \|\theta_0 - \theta_t\|^2\right), \qquad
        v_t = v_{t-1} + \bar r_t^2 \|g_t\|^2 \\
        \Delta\theta_t &= \eta_t \, \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon} \, g_t

    Norms are over all parameters; :math:`\bar r_0^2` is ``init_estim_sq_dist``
    (default :math:`\epsilon`). With ``weight_decay``, :math:`g_t` is
    :math:`g_t + \lambda \theta_t` for the parameters ``mask`` selects. The parameter
    becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.contrib.dowg`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (1 keeps DoWG's own step).
        init_estim_sq_dist: :math:`\bar r_0^2`, or ``None`` for ``eps``.
        eps: :math:`\epsilon`, added to the denominator.
        weight_decay: :math:`\lambda`, or ``None`` for none.
        mask: which parameters are decayed (as :class:`AdamW`'s ``mask``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.DoWG(init_estim_sq_dist=1.0))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.7070068,  0.7070068], dtype=float32)
    """

    def __init__(
        self,
        learning_rate: ScalarOrSchedule = 1.0,
        init_estim_sq_dist: float | None = None,
        eps: float = 1e-4,
        weight_decay: float | None = None,
        mask: MaskLike = None,
    ):
        super().__init__(learning_rate, eps, weight_decay, mask)
        set_hypers(self, init_estim_sq_dist=init_estim_sq_dist)
        self.estim_sq_dist = None  # created at the first step, in the parameters' dtype
        self.weighted_sq_norm_grads = None

    def step_size(self, grads, moved, params, dtype):
        if self.estim_sq_dist is None:
            first = self.eps if self.init_estim_sq_dist is None else self.init_estim_sq_dist
            self.estim_sq_dist = jnp.asarray(first, dtype=dtype)
            self.weighted_sq_norm_grads = jnp.asarray(0.0, dtype=dtype)
        curr_sq_dist = optax.tree.norm(moved, squared=True)
        self.estim_sq_dist = jnp.maximum(self.estim_sq_dist, curr_sq_dist)
        step_sq_norm_grads = optax.tree.norm(grads, squared=True)
        self.weighted_sq_norm_grads = (
            self.estim_sq_dist * step_sq_norm_grads + self.weighted_sq_norm_grads
        )
        return self.estim_sq_dist / (jnp.sqrt(self.weighted_sq_norm_grads) + self.eps)
