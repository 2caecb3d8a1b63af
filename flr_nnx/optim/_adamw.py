"""AdamW and NAdamW, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax

from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    cast,
    decayed,
    scale,
    set_hypers,
    value_at,
    with_defaults,
)
from flr_nnx.optim._adam import Adam


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), the twin of ``optax.adamw``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        v_t &= (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        \Delta\theta_t &= \eta_t \left( \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
            + \lambda_t \theta_{t-1} \right)

    The decay :math:`\lambda_t \theta_{t-1}` is on the **parameter** (not the
    gradient) and only for the parameters ``mask`` selects. With
    ``nesterov=True``, :math:`\hat m_t` is replaced by
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.adamw`` under ``jit``, except on parameters narrower than float32
    with a ``weight_decay`` schedule or a float32 ``mu_dtype``: optax's update
    is then float32, and a hook returns it rounded to the parameter's dtype.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        mu_dtype: dtype of the first moment (default: that of the parameter).
        weight_decay: :math:`\lambda`, a float or a schedule.
        mask: which parameters are decayed: ``None`` (all), a pytree of bools
            like the parameters (or a prefix), a callable of the parameters
            returning one (optax's convention), or
            :func:`flr_nnx.helpers.key_mask` of a predicate on the parameter key.
        nesterov: use Nesterov momentum (NAdamW).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> no_bias = flr.helpers.key_mask(lambda key: key[-1] != "bias")
        >>> tx = flr.as_optax(flr.optim.AdamW(0.1, weight_decay=0.5, mask=no_bias))
        >>> params = {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([1.0, -2.0])}
        >>> grads = {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> updates["kernel"], updates["bias"]
        (Array([-0.05,  0.1 ], dtype=float32), Array([-0., -0.], dtype=float32))
    """

    # Adam's per-step values, and the decay of this step with the keys it applies to.
    transient = (*Adam.transient, "wd_t", "decayed")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        mu_dtype: Any | None = None,
        weight_decay: ScalarOrSchedule = 1e-4,
        mask: MaskLike = None,
        *,
        nesterov: bool = False,
    ):
        dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
        super().__init__(learning_rate, b1, b2, eps, eps_root, mu_dtype=dtype, nesterov=nesterov)
        set_hypers(self, weight_decay=weight_decay)
        self.mask = Mask(mask)

    def call_model(self, grads, **_):
        # The decay of this step reads the count before Adam advances it, as optax does.
        self.wd_t = value_at(self.weight_decay, self.count)
        grads = super().call_model(grads=grads)
        self.decayed = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        update = self.direction(key, grad)
        if key in self.decayed:
            update = update + self.wd_t * param
        return cast(scale(self.lr_t, update), grad.dtype)


class NAdamW(AdamW):
    r"""AdamW with Nesterov momentum (Dozat, 2016), the twin of ``optax.nadamw``.

    .. math::

        \hat m_t &= \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t) \\
        \Delta\theta_t &= \eta_t \left( \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
            + \lambda_t \theta_{t-1} \right)

    with :math:`m_t, \hat v_t` as in :class:`AdamW`. Bit-identical to
    ``optax.nadamw`` under ``jit`` (with the exception noted in :class:`AdamW`).
    Takes the arguments of :class:`AdamW`, with ``nesterov=True`` by default (as
    ``optax.nadamw``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.NAdamW(0.1, weight_decay=0.5))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.19736743,  0.24736743], dtype=float32)
    """

    # AdamW's arguments (optax.nadamw's), Nesterov by default.
    __init__ = with_defaults(AdamW.__init__, nesterov=True)
