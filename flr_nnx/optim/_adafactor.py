"""Adafactor, written with the public hooks."""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    UNIT_CLOSED,
    Bound,
    Mask,
    MaskLike,
    ScalarOrSchedule,
    abs_sq,
    cast,
    check_complex_state,
    scale,
    set_hypers,
    value_at,
)


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, 2018), the twin of ``optax.adafactor``.

    For a parameter whose two largest dimensions (rows :math:`r`, columns :math:`c`)
    are both at least ``min_dim_size_to_factor``, the second moment is *factored*:
    only its row and column means are kept, so the state is smaller than the
    parameter. Other parameters keep a full second moment :math:`v`.

    .. math::

        \hat\beta_t &= 1 - t^{-\gamma}, \qquad G_t = g_t^2 + \epsilon_1 \\
        R_t &= \hat\beta_t R_{t-1} + (1 - \hat\beta_t)\,\mathrm{mean}_c(G_t), \qquad
        C_t = \hat\beta_t C_{t-1} + (1 - \hat\beta_t)\,\mathrm{mean}_r(G_t) \\
        u_t &= g_t \big/ \sqrt{R_t C_t / \mathrm{mean}(R_t)}
            \quad (\text{factored; else } u_t = g_t / \sqrt{v_t},\;
            v_t = \hat\beta_t v_{t-1} + (1 - \hat\beta_t) G_t) \\
        u_t &\leftarrow u_t / \max\!\big(1, \mathrm{RMS}(u_t) / d\big), \qquad
        u_t \leftarrow \eta_t \, u_t \, \max(\mathrm{RMS}(\theta_t), 10^{-3}) \\
        m_t &= (1 - \beta_1) u_t + \beta_1 m_{t-1}, \qquad
        \Delta\theta_t = m_t + \lambda_t \theta_t

    Each step after the first is optional (``clipping_threshold`` :math:`d`,
    ``learning_rate`` :math:`\eta`, ``multiply_by_parameter_scale``, ``momentum``
    :math:`\beta_1`, ``weight_decay_rate`` :math:`\lambda`), as in optax. The
    parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.adafactor`` under ``jit``, except on parameters narrower than
    ``dtype_momentum`` (e.g. bfloat16 with the default float32 momentum): optax's
    update is then in ``dtype_momentum``, and a hook returns it rounded to the
    parameter's dtype.

    Args:
        learning_rate: :math:`\eta`, a float, a schedule, or ``None`` for no scaling.
        min_dim_size_to_factor: factor only if the two largest dimensions are at least this.
        decay_rate: :math:`\gamma`, the exponent of the second-moment decay schedule.
        decay_offset: steps subtracted from :math:`t` (for fine-tuning).
        multiply_by_parameter_scale: scale by the root mean square of the parameter.
        clipping_threshold: :math:`d`, or ``None`` for no clipping.
        momentum: :math:`\beta_1`, or ``None`` for no momentum.
        dtype_momentum: dtype of the momentum.
        weight_decay_rate: :math:`\lambda`, a float, a schedule, or ``None``.
        eps: :math:`\epsilon_1`, added to the squared gradient.
        factored: whether to factor the second moment at all.
        weight_decay_mask: which parameters decay (as ``mask`` of :class:`LAMB`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> opt = flr.optim.Adafactor(learning_rate=0.1, min_dim_size_to_factor=2)
        >>> tx = flr.as_optax(opt)
        >>> params = {"kernel": jnp.ones((3, 2))}
        >>> state = tx.init(params)
        >>> [v.shape for v in (state.tree["v_row"]["kernel"], state.tree["v_col"]["kernel"])]
        [(2,), (3,)]
        >>> updates, state = tx.update({"kernel": jnp.ones((3, 2))}, state, params)
        >>> updates["kernel"]
        Array([[-0.1, -0.1],
               [-0.1, -0.1],
               [-0.1, -0.1]], dtype=float32)
    """

    transient = ("decay_t", "lr_t", "wd_t", "decays")

    # Adafactor's momentum may be 1 (as optax allows).
    hyper_bounds: ClassVar[dict[str, Bound]] = {"momentum": UNIT_CLOSED}

    def __init__(
        self,
        learning_rate: ScalarOrSchedule | None = None,
        min_dim_size_to_factor: int = 128,
        decay_rate: float = 0.8,
        decay_offset: int = 0,
        multiply_by_parameter_scale: bool = True,
        clipping_threshold: float | None = 1.0,
        momentum: float | None = None,
        dtype_momentum: Any = jnp.float32,
        weight_decay_rate: ScalarOrSchedule | None = None,
        eps: float = 1e-30,
        factored: bool = True,
        weight_decay_mask: MaskLike = None,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            min_dim_size_to_factor=min_dim_size_to_factor,
            decay_rate=decay_rate,
            decay_offset=decay_offset,
            clipping_threshold=clipping_threshold,
            momentum=momentum,
            weight_decay_rate=weight_decay_rate,
            eps=eps,
        )
        self.factored, self.multiply_by_parameter_scale = factored, multiply_by_parameter_scale
        self.dtype_momentum = jnp.dtype(dtype_momentum)
        self.weight_decay_mask = Mask(weight_decay_mask)
        self.count = jnp.zeros([], jnp.int32)
        self.v_row: dict = {}  # factored: second moment averaged over the largest axis
        self.v_col: dict = {}  # factored: ... over the second-largest axis
        self.v: dict = {}  # not factored: the full second moment
        self.ema: dict = {}

    def factored_dims(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """The (second-largest, largest) axes to factor over, or ``None``: optax's rule."""
        if not self.factored or len(shape) < 2:
            return None
        order = np.argsort(shape)
        if shape[order[-2]] < self.min_dim_size_to_factor:
            return None
        return int(order[-2]), int(order[-1])

    def call_model(self, grads, **_):
        t = jnp.array(self.count - self.decay_offset + 1, jnp.float32)
        self.decay_t = 1.0 - t ** (-self.decay_rate)
        if self.learning_rate is not None:
            self.lr_t = value_at(self.learning_rate, self.count)
        if self.weight_decay_rate is not None:
            self.wd_t = value_at(self.weight_decay_rate, self.count)
            self.decays = self.weight_decay_mask.select(grads)
        self.count = optax.safe_increment(self.count)
        return grads

    def call_param(self, key, grad, param):
        dims = self.factored_dims(grad.shape)
        decay_t, dtype = self.decay_t, param.dtype
        grad_sqr = abs_sq(grad) + self.eps
        if dims is not None:
            d1, d0 = dims
            if key not in self.v_row:
                self.v_row[key] = jnp.zeros_like(grad.sum(axis=d0))
                self.v_col[key] = jnp.zeros_like(grad.sum(axis=d1))
            v_row = decay_t * self.v_row[key] + (1.0 - decay_t) * jnp.mean(grad_sqr, axis=d0)
            v_col = decay_t * self.v_col[key] + (1.0 - decay_t) * jnp.mean(grad_sqr, axis=d1)
            v_row, v_col = v_row.astype(dtype), v_col.astype(dtype)
            self.v_row[key], self.v_col[key] = v_row, v_col
            row_col_mean = jnp.mean(v_row, axis=d1 - 1 if d1 > d0 else d1, keepdims=True)
            row_factor = (v_row / row_col_mean) ** -0.5
            col_factor = v_col**-0.5
            update = (
                grad * jnp.expand_dims(row_factor, axis=d0) * jnp.expand_dims(col_factor, axis=d1)
            )
        else:
            if key not in self.v:
                self.v[key] = jnp.zeros_like(grad)
            v = (decay_t * self.v[key] + (1.0 - decay_t) * grad_sqr).astype(dtype)
            self.v[key] = v
            update = grad * v**-0.5
        if self.clipping_threshold is not None:
            rms = jnp.sqrt(jnp.mean(abs_sq(update)))
            update = update / jnp.maximum(1.0, rms / self.clipping_threshold)
        if self.learning_rate is not None:
            update = scale(self.lr_t, update)
        if self.multiply_by_parameter_scale:
            update = update * optax.safe_root_mean_squares(param, 1e-3)
        if self.momentum is not None:
            check_complex_state(
                type(self).__name__, key, grad, self.dtype_momentum, "dtype_momentum", self.ema
            )
            if key not in self.ema:
                self.ema[key] = jnp.zeros_like(grad, dtype=self.dtype_momentum)
            update = (1 - self.momentum) * update + self.momentum * self.ema[key]
            self.ema[key] = cast(update, self.dtype_momentum)
        if self.weight_decay_rate is not None and key in self.decays:
            update = update + self.wd_t * param
        return update.astype(dtype)
