"""Optimistic Adam (optax's deprecated first version), written with the public hooks."""

from __future__ import annotations

import warnings
from typing import Any

import jax.numpy as jnp

from flr_nnx._errors import HyperparameterError
from flr_nnx.helpers import cast, set_hypers
from flr_nnx.optim._adam import Adam


class OptimisticAdam(Adam):
    r"""Optimistic Adam (Daskalakis et al., 2017): the deprecated ``optax.optimistic_adam``.

    With :math:`u_t` Adam's bias-corrected step (:class:`Adam`, Nesterov by default),

    .. math::

        \Delta\theta_t = (\eta + \beta)\, u_t - \beta\, u_{t-1}
        \qquad (u_0 = u_1 \text{ at the first step})

    where :math:`\beta` is the optimism (default :math:`\eta`). The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Like optax, it warns that it is deprecated (in
    favour of ``optax.optimistic_adam_v2``) and takes no schedule. Bit-identical to
    ``optax.optimistic_adam`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float.
        optimism: :math:`\beta`, the weight of the last step; ``None`` for :math:`\eta`.
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: added to the denominator outside the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment (default: that of the parameter).
        nesterov: use Nesterov momentum (optax's default here: ``True``).

    Example:
        >>> import warnings, jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     tx = flr.as_optax(flr.optim.OptimisticAdam(0.1, optimism=0.0, nesterov=False))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]  # no optimism: Adam's first step
        Array([-0.09999934,  0.09999934], dtype=float32)
    """

    transient = (*Adam.transient, "first")

    def __init__(
        self,
        learning_rate: float,
        optimism: float | None = None,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        mu_dtype: Any | None = None,
        *,
        nesterov: bool = True,
    ):
        warnings.warn(
            "`optimistic_adam` is deprecated, please use `optimistic_adam_v2` instead.",
            category=DeprecationWarning,
            stacklevel=2,
        )
        if callable(learning_rate):
            raise HyperparameterError(
                f"{type(self).__name__}: This version of `optimistic_adam` does not support "
                "learning rate schedules but `optimistic_adam_v2` does. Fix: pass a float."
            )
        super().__init__(learning_rate, b1, b2, eps, eps_root, mu_dtype=mu_dtype, nesterov=nesterov)
        set_hypers(self, optimism=learning_rate if optimism is None else optimism)
        self.is_initial_step = jnp.array(True)
        self.previous_gradient: dict = {}

    def call_model(self, grads, **_):
        grads = super().call_model(grads=grads)
        self.first = self.is_initial_step  # read by call_param; the state moves on
        self.is_initial_step = jnp.array(False)
        return grads

    def call_param(self, key, grad, **_):
        update = self.direction(key, grad)
        if key not in self.previous_gradient:
            self.previous_gradient[key] = jnp.zeros_like(grad)
        # optax.scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism)
        previous = jnp.where(self.first, update, self.previous_gradient[key])
        step = (self.learning_rate + self.optimism) * update - self.optimism * previous
        self.previous_gradient[key] = cast(update, self.previous_gradient[key].dtype)
        return cast(step, grad.dtype)
