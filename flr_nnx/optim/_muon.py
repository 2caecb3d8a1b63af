"""Muon, written with the public hooks."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

from flr_nnx._errors import HyperparameterError, StructureError
from flr_nnx._optimizer import Key, Optimizer
from flr_nnx.helpers import (
    Bound,
    Mask,
    MaskLike,
    ScalarOrSchedule,
    abs_sq,
    bias_correction,
    bias_corrections,
    check_complex_state,
    debias,
    debias_momentum,
    decayed,
    ema,
    is_zero,
    key_of,
    reject_complex,
    scale,
    set_hypers,
    tick,
    unflatten,
)
from flr_nnx.optim._newton_schulz import PRECONDITIONINGS, PRESETS, newton_schulz


class _Static:
    """Holds a Python value the engine must not walk into (pytrees of NamedTuples)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


def _axes(ndim: int, dims: MuonDimensionNumbers) -> tuple[tuple[int, ...], tuple[int, ...]]:
    red, out = dims.reduction_axis, dims.output_axis
    red = (red,) if isinstance(red, int) else tuple(red)
    out = (out,) if isinstance(out, int) else tuple(out)
    return tuple(a % ndim for a in red), tuple(a % ndim for a in out)


class Muon(Optimizer):
    r"""Muon (Jordan, 2024), the twin of ``optax.contrib.muon``.

    For each matrix (every 2-D parameter, or those ``muon_weight_dimension_numbers``
    names), with :math:`t` the step and :math:`\mathrm{NS}` the Newton–Schulz
    orthogonalization (the quintic iteration on :math:`X / \|X\|_F`):

    .. math::

        m_t &= (1 - \beta) g_t + \beta m_{t-1}, \qquad
        \hat m_t = \beta \frac{m_t}{1 - \beta^{t+1}} + (1 - \beta) \frac{g_t}{1 - \beta^t}
            \quad (\text{Nesterov; else } m_t / (1 - \beta^t)) \\
        \Delta\theta_t &= \eta_t \left( \sqrt{\max(1, n_{\mathrm{out}} / n_{\mathrm{in}})}
            \; \mathrm{NS}(\hat m_t) + \lambda \theta_t \right)

    Every other parameter (vectors, scalars, and by default tensors of rank > 2)
    gets AdamW (:class:`~flr_nnx.optim.Adam` arithmetic with ``adam_b1``,
    ``adam_b2``, ``eps``, Nesterov as ``nesterov``, decoupled decay
    ``adam_weight_decay`` and learning rate ``adam_learning_rate``), as optax does.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.contrib.muon`` under ``jit`` on CPU, in float32 and bfloat16 (measured
    over 20 steps through both bridges with matrices of shapes 16x32, 32x8, 24x24,
    a stacked 3x16x12 parameter and an Adam vector in one ``jit``, with and
    without Nesterov and weight decay; ``tests/test_muon.py``).

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        ns_coeffs: the Newton–Schulz coefficients :math:`(c_0, c_1, c_2)`, a tuple of
            such tuples (one per step), or a preset name (``'standard'``, ``'dion'``).
        ns_steps: number of Newton–Schulz steps.
        beta: :math:`\beta`, decay of the momentum.
        eps: added to the norm before Newton–Schulz, and Adam's :math:`\epsilon`.
        weight_decay: :math:`\lambda` for the matrices (multiplied by the learning rate).
        weight_decay_mask: which matrices decay (as ``mask`` of :class:`LAMB`).
        mu_dtype: dtype of the momenta (default: that of the parameter).
        nesterov: use Nesterov momentum (in both branches).
        adaptive: scale each orthogonalized update by
            :math:`\langle \hat m_t, \mathrm{NS}(\hat m_t)\rangle`.
        preconditioning: ``'frobenius'``, ``'spectral'``, ``'aol'`` or ``'schatten'``.
        adam_b1: Adam's :math:`\beta_1` for the other parameters.
        adam_b2: Adam's :math:`\beta_2`.
        adam_eps_root: Adam's :math:`\bar\epsilon`.
        adam_weight_decay: Adam's decoupled weight decay.
        adam_learning_rate: Adam's learning rate (default: ``learning_rate``).
        muon_weight_dimension_numbers: which parameters are matrices and how to
            read them: a pytree (or a prefix) of ``optax.contrib.MuonDimensionNumbers``
            and ``None`` (Adam), or a callable of the parameters returning one. By
            default every 2-D parameter, as ``(reduction_axis=0, output_axis=1)``.
            Other axes are batch axes, orthogonalized independently.
        consistent_rms: if set, scale by :math:`\sqrt{\max(n_{\mathrm{in}}, n_{\mathrm{out}})}`
            times this instead of the width scaling above.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Muon(learning_rate=0.1))
        >>> params = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
        >>> grads = {"kernel": jnp.array([[2.0, 0.0], [0.0, 1.0]]), "bias": jnp.ones(2)}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["kernel"]  # roughly -0.1 * the orthogonal factor, here the identity
        Array([[-0.0688..., -0.        ],
               [-0.        , -0.1114...]], dtype=float32)
    """

    # ns_steps counts Newton-Schulz iterations: at least one.
    hyper_bounds: ClassVar[dict[str, Bound]] = {"ns_steps": Bound(low=1)}

    transient = (
        "lr_t",
        "adam_lr_t",
        "wd_t",
        "adam_wd_t",
        "dims",
        "decays",
        "adam_bc1",
        "adam_bc1_next",
        "adam_bc2",
        "bc",
        "bc_next",
    )

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        ns_coeffs: Any = PRESETS["standard"],
        ns_steps: int = 5,
        beta: float = 0.95,
        eps: float = 1e-8,
        weight_decay: ScalarOrSchedule = 0.0,
        weight_decay_mask: MaskLike = None,
        mu_dtype: Any | None = None,
        *,
        nesterov: bool = True,
        adaptive: bool = False,
        preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
        adam_b1: float = 0.9,
        adam_b2: float = 0.999,
        adam_eps_root: float = 0.0,
        adam_weight_decay: ScalarOrSchedule = 0.0,
        adam_learning_rate: ScalarOrSchedule | None = None,
        muon_weight_dimension_numbers: Any = None,
        consistent_rms: float | None = None,
    ):
        name = type(self).__name__
        set_hypers(
            self,
            learning_rate=learning_rate,
            ns_steps=ns_steps,
            beta=beta,
            eps=eps,
            weight_decay=weight_decay,
            adam_b1=adam_b1,
            adam_b2=adam_b2,
            adam_eps_root=adam_eps_root,
            adam_weight_decay=adam_weight_decay,
            adam_learning_rate=adam_learning_rate,
        )
        if preconditioning not in PRECONDITIONINGS:
            raise HyperparameterError(
                f"{name}(preconditioning={preconditioning!r}): expected one of "
                f"{PRECONDITIONINGS}. Fix: pass one of those ('frobenius' is optax's default)."
            )
        if isinstance(ns_coeffs, str):
            if ns_coeffs not in PRESETS:
                raise HyperparameterError(
                    f"{name}(ns_coeffs={ns_coeffs!r}): unknown preset; expected one of "
                    f"{sorted(PRESETS)} or a tuple of coefficients. Fix: pass one of those."
                )
            ns_coeffs = PRESETS[ns_coeffs]
        coeffs = jnp.asarray(ns_coeffs)
        if coeffs.ndim > 2 or coeffs.shape[-1] != 3:
            raise HyperparameterError(
                f"{name}(ns_coeffs=...): expected shape (3,) or (n, 3), got {coeffs.shape}. "
                "Fix: pass (c0, c1, c2) or one such triple per Newton-Schulz step."
            )
        if coeffs.ndim == 2:
            if coeffs.shape[0] > ns_steps:
                raise HyperparameterError(
                    f"{name}(ns_steps={ns_steps}): {coeffs.shape[0]} coefficient triples "
                    f"given but only {ns_steps} steps. Fix: raise ns_steps to at least "
                    f"{coeffs.shape[0]}."
                )
            coeffs = coeffs[-ns_steps:]
        if adam_learning_rate is None:
            self.adam_learning_rate = learning_rate
        self.weight_decay_mask = Mask(weight_decay_mask)
        self.mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)
        self.nesterov, self.adaptive, self.preconditioning = nesterov, adaptive, preconditioning
        self.dimension_numbers = _Static(muon_weight_dimension_numbers)
        self.consistent_rms = consistent_rms
        # State, as in optax: the coefficients are an array (read at run time, not
        # folded into the program as constants), the count and the momenta.
        self.ns_coeffs = coeffs
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}  # Muon's momentum, for the matrices
        self.adam_mu: dict = {}  # Adam's moments, for the rest
        self.adam_nu: dict = {}

    def resolve(self, grads: dict[Key, jax.Array]) -> dict[Key, MuonDimensionNumbers | None]:
        """Each parameter's dimension numbers, or ``None`` for Adam: optax's rule."""
        spec = self.dimension_numbers.value
        if spec is None:
            return {k: MuonDimensionNumbers() if g.ndim == 2 else None for k, g in grads.items()}
        if callable(spec) and not isinstance(spec, MuonDimensionNumbers):
            spec = spec(unflatten(grads))

        def is_leaf(x: Any) -> bool:
            return x is None or isinstance(x, MuonDimensionNumbers)

        leaves = jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_leaf)[0]
        by_key = {key_of(path): leaf for path, leaf in leaves}
        out = {}
        for key in grads:
            prefix = next((key[:n] for n in range(len(key), -1, -1) if key[:n] in by_key), None)
            if prefix is None:
                raise StructureError(
                    f"muon_weight_dimension_numbers has no entry for parameter {key}; its "
                    f"entries look like {list(by_key)[:3]}. Fix: give it the structure of "
                    "the parameters (or a prefix), with None for parameters Adam optimizes."
                )
            out[key] = by_key[prefix]
        return out

    def call_model(self, grads, **_):
        self.lr_t, self.adam_lr_t, self.wd_t, self.adam_wd_t = tick(
            self,
            self.learning_rate,
            self.adam_learning_rate,
            self.weight_decay,
            self.adam_weight_decay,
        )
        self.dims = _Static(self.resolve(grads))
        self.decays = decayed(self.weight_decay, self.weight_decay_mask, grads)
        # optax.contrib.muon's order, and its Nesterov corrections computed even when unused.
        self.adam_bc1 = bias_correction(self.adam_b1, self.count)
        self.adam_bc1_next = bias_correction(self.adam_b1, optax.safe_increment(self.count))
        self.adam_bc2 = bias_correction(self.adam_b2, self.count)
        # One divisor per step shared by every matrix, as optax's tree-wide bias
        # correction: XLA rewrites ``x / s`` as ``x * (1 / s)`` only while the
        # scalar ``s`` has a single use, so the same rounding needs the same
        # sharing (a divisor per matrix would be rewritten with two matrices or
        # more, optax's is not: a last-bit difference Newton-Schulz amplifies).
        self.bc, _, self.bc_next = bias_corrections(self.count, self.beta, nesterov=True)
        return grads

    def call_param(self, key, grad, param):
        dims = self.dims.value[key]
        if dims is None:
            return self.adam(key, grad, param)
        check_complex_state(type(self).__name__, key, grad, self.mu_dtype, "mu_dtype")
        if self.preconditioning == "schatten":
            # optax's Schatten step forms X X^T, not X X^H: no orthogonalization for complex X.
            reject_complex(
                type(self).__name__,
                key,
                grad,
                "preconditioning='schatten' forms X X^T (optax's iteration), which does not "
                "orthogonalize a complex matrix (that takes X X^H)",
                "use preconditioning='frobenius', 'spectral' or 'aol' for complex matrices.",
            )
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
        mu = ema(self.mu[key], grad, self.beta)
        m_hat = debias_momentum(mu, grad, self.beta, self.bc, self.nesterov and self.bc_next)
        self.mu[key] = mu if self.mu_dtype is None else mu.astype(self.mu_dtype)
        update = self.orthogonalize(m_hat, dims)
        if self.adaptive:
            update = jnp.sum(m_hat.conj() * update) * update
        red, out = _axes(grad.ndim, dims)
        fan_in = math.prod(grad.shape[a] for a in red)
        fan_out = math.prod(grad.shape[a] for a in out)
        if self.consistent_rms is None:
            update = jnp.sqrt(jnp.maximum(1, fan_out / fan_in)) * update
        else:
            update = jnp.sqrt(jnp.maximum(fan_in, fan_out)) * self.consistent_rms * update
        if key in self.decays:
            update = update + self.wd_t * param
        return scale(self.lr_t, update).astype(grad.dtype)

    def orthogonalize(self, x: jax.Array, dims: MuonDimensionNumbers) -> jax.Array:
        """Newton–Schulz on ``x`` read as a batch of (reduction, output) matrices."""
        if x.ndim < 2:
            raise StructureError(
                f"Muon can only orthogonalize parameters of rank >= 2, got shape {x.shape} "
                f"with dimension numbers {dims}. Fix: map it to None in "
                "muon_weight_dimension_numbers so Adam optimizes it."
            )
        red, out = _axes(x.ndim, dims)
        if set(red) & set(out):
            raise StructureError(
                f"Muon dimension numbers {dims} use an axis both as reduction and output "
                f"axis for a parameter of shape {x.shape}. Fix: make them disjoint."
            )
        if x.ndim == 2:  # optax reads every matrix as (reduction, output) here
            red, out = (0,), (1,)
        batch = tuple(sorted(set(range(x.ndim)) - set(red) - set(out)))
        order = batch + red + out
        sizes = [x.shape[a] for a in order]
        flat = x.transpose(order).reshape(
            math.prod(sizes[: len(batch)]),
            math.prod(sizes[len(batch) : len(batch) + len(red)]),
            math.prod(sizes[len(batch) + len(red) :]),
        )

        def one(m):
            return newton_schulz(m, self.ns_coeffs, self.ns_steps, self.preconditioning, self.eps)

        inverse = tuple(sorted(range(x.ndim), key=lambda i: order[i]))
        return jax.vmap(one)(flat).reshape(sizes).transpose(inverse)

    def adam(self, key: Key, grad: jax.Array, param: jax.Array) -> jax.Array:
        """AdamW for the parameters that are not matrices (optax.adamw's arithmetic)."""
        check_complex_state(type(self).__name__, key, grad, self.mu_dtype, "mu_dtype")
        if key not in self.adam_mu:
            self.adam_mu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
            self.adam_nu[key] = jnp.zeros_like(grad)
        mu = ema(self.adam_mu[key], grad, self.adam_b1)
        nu = ema(self.adam_nu[key], abs_sq(grad), self.adam_b2)
        nesterov = self.nesterov and self.adam_bc1_next
        mu_hat = debias_momentum(mu, grad, self.adam_b1, self.adam_bc1, nesterov)
        nu_hat = debias(nu, self.adam_bc2)
        update = mu_hat / (jnp.sqrt(nu_hat + self.adam_eps_root) + self.eps)
        self.adam_mu[key] = mu.astype(self.adam_mu[key].dtype)
        self.adam_nu[key] = nu.astype(self.adam_nu[key].dtype)
        if not is_zero(self.adam_wd_t):
            update = update + self.adam_wd_t * param
        return scale(self.adam_lr_t, update).astype(grad.dtype)
