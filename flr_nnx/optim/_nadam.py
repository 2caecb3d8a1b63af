"""NAdam, written with the public hooks."""

from __future__ import annotations

from flr_nnx.helpers import with_defaults
from flr_nnx.optim._adam import Adam


class NAdam(Adam):
    r"""Adam with Nesterov momentum (Dozat, 2016), the twin of ``optax.nadam``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        v_t &= (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        \hat m_t &= \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t),
            \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        \Delta\theta_t &= \eta_t \, \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)

    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.nadam`` under ``jit`` (except with a ``mu_dtype`` wider than the
    parameter: optax's update is then in ``mu_dtype``, and a hook returns it rounded
    to the parameter's dtype). It is :class:`Adam` with ``nesterov=True``
    by default, and takes the arguments of ``optax.nadam`` in the same order.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        mu_dtype: dtype of the first moment (default: that of the parameter).
        nesterov: use Nesterov momentum (``False`` gives plain Adam).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.NAdam(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.14736743,  0.14736743], dtype=float32)
    """

    # Adam's promise, made again: it is not inherited by subclasses.
    elementwise = True

    # Adam's arguments in optax.nadam's order (mu_dtype also by position), Nesterov by default.
    __init__ = with_defaults(Adam.__init__, positional=("mu_dtype",), nesterov=True)
