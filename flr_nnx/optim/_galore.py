"""GaLore: Adam on gradients projected onto a low-rank subspace, written with the public hooks."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from optax.contrib import GaLoreDimensionNumbers

from flr_nnx._errors import HyperparameterError, Missing
from flr_nnx._optimizer import Optimizer, call
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    cast,
    decayed,
    key_of,
    reject_complex,
    set_hypers,
    tick,
    unflatten,
)
from flr_nnx.helpers import scale as scaled
from flr_nnx.optim._adam import Adam


class GaLore(Optimizer):
    r"""GaLore (Zhao et al., 2024), the twin of ``optax.contrib.galore``.

    A matrix parameter's gradient :math:`G \in \mathbb{R}^{m \times n}` is projected onto
    :math:`r = \min(\text{rank}, m, n)` directions, the base optimizer :math:`\rho` (Adam)
    runs in that subspace, and its step is projected back. With :math:`m \ge n` (else the
    transposed rule, :math:`P_t` from :math:`V`, :math:`R_t = G_t P_t`):

    .. math::

        P_t &= U_{:, :r} \text{ of } \operatorname{svd}(G_t) \text{ if } t \bmod k = 0,
            \text{ else } P_{t-1} \\
        R_t &= P_t^\top G_t, \qquad N_t = \rho(R_t) \\
        \Delta\theta_t &= \eta_t \left( s \, P_t N_t + \lambda \theta_{t-1} \right)

    with :math:`k` = ``update_proj_gap``, :math:`s` = ``scale`` and :math:`\lambda` the
    decoupled weight decay (for the parameters ``mask`` selects). Parameters that are not
    projected (not 2D, or as ``weight_dimension_numbers`` says) get
    :math:`\eta_t(\rho(G_t) + \lambda\theta_{t-1})`, unscaled as in optax. The parameter
    becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.contrib.galore``
    under ``jit`` (the SVD is the same ``jnp.linalg.svd`` call, in float32), except with a
    base optimizer whose step is wider than the parameter (Adam with a float32 ``mu_dtype``
    on bfloat16 parameters): a hook returns its step rounded to the parameter's dtype, where
    optax projects back the float32 one (measured: at most 0.4% normwise, one bfloat16 ulp).

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        rank: the target rank of the projection.
        update_proj_gap: :math:`k`, steps between recomputations of the projectors.
        scale: :math:`s`, scales the projected-back updates.
        base_optimizer: the hook optimizer run on the low-rank gradients, which must not
            read ``param`` (optax passes it none); default :class:`Adam` with learning
            rate 1 (``optax.scale_by_adam()``). An optax one: ``flr.from_optax(tx)``,
            bit-identical to ``optax.contrib.galore(base_optimizer=tx)`` for a gradient
            transformation (``optax.scale_by_adam()``); a full optimizer
            (``optax.adam(1.0)``) is negated to a descent direction, where optax's
            GaLore steps along its update's opposite (``sign='gradient'`` is optax's).
        weight_decay: :math:`\lambda`.
        mask: which parameters are decayed, as for :class:`AdamW`.
        weight_dimension_numbers: which axes of a parameter form the matrix: None (2D
            parameters only), one ``optax.contrib.GaLoreDimensionNumbers`` for every
            parameter of rank >= 2, a pytree of them (None: not projected) like the
            parameters, or a callable of the parameters returning one.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.GaLore(learning_rate=0.1, rank=1))
        >>> params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])}
        >>> state = tx.init(params)
        >>> state.tree["projector"]["w"].shape, state.tree["base_optimizer"]["mu"]["w"].shape
        ((3, 1), (1, 2))
        >>> updates, state = tx.update(params, state, params)
        >>> updates["w"].shape
        (3, 2)
    """

    # Per-step values: the learning rate, each projected parameter's dimension numbers, the
    # base optimizer's low-rank steps and the decayed keys.
    transient = ("lr_t", "dims", "steps", "decays")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        rank: int = 128,
        update_proj_gap: int = 200,
        scale: float = 1.0,
        base_optimizer: Optimizer | None = None,
        weight_decay: float = 0.0,
        mask: MaskLike = None,
        weight_dimension_numbers: Any = None,
    ):
        if not isinstance(rank, int) or rank <= 0:
            raise HyperparameterError(
                f"GaLore(rank={rank!r}): expected a positive int. Fix: pass e.g. rank=128."
            )
        if not isinstance(update_proj_gap, int) or update_proj_gap <= 0:
            raise HyperparameterError(
                f"GaLore(update_proj_gap={update_proj_gap!r}): expected a positive int. "
                "Fix: pass the number of steps between projector updates, e.g. 200."
            )
        if base_optimizer is not None and not isinstance(base_optimizer, Optimizer):
            raise HyperparameterError(
                f"GaLore(base_optimizer={type(base_optimizer).__name__}): expected a hook "
                "optimizer. Fix: pass e.g. flr.optim.Adam(1.0), or flr.from_optax(tx) for "
                "an optax transformation."
            )
        set_hypers(self, learning_rate=learning_rate, weight_decay=weight_decay)
        self.rank, self.update_proj_gap, self.scale = rank, update_proj_gap, scale
        self.base_optimizer = Adam(1.0) if base_optimizer is None else base_optimizer
        self.mask = Mask(mask)
        self.weight_dimension_numbers = _Matrices(weight_dimension_numbers)
        self.count = jnp.zeros([], jnp.int32)
        self.projector: dict = {}

    def call_model(self, grads, loss, **_):
        # optax's order: the projectors are recomputed when the count *before* this step is
        # a multiple of the gap; a learning-rate schedule reads that count too.
        refresh = (self.count % self.update_proj_gap) == 0
        self.lr_t = tick(self, self.learning_rate)
        self.dims = self.weight_dimension_numbers.checked(grads)
        low = {k: self.project(k, g, self.dims.get(k), refresh) for k, g in grads.items()}
        # The base optimizer sees only the low-rank gradients: optax passes it no params.
        self.steps = call(self.base_optimizer, loss=loss, grads=low, params=_NO_PARAMS)
        self.decays = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        update = self.steps[key]
        if key in self.dims:
            update = self.project_back(key, update, grad)
        if key in self.decays:
            update = update + self.weight_decay * param
        return cast(scaled(self.lr_t, update), grad.dtype)

    def project(self, key, grad, dims, refresh):
        """:math:`R_t` for one parameter; recomputes its projector :math:`P_t` when due."""
        if dims is None:
            return grad
        reject_complex(
            "GaLore",
            key,
            grad,
            "optax.contrib.galore takes the projector from the SVD of the gradient cast to "
            "float32, which silently drops its imaginary part",
            "leave complex parameters unprojected (None for them in "
            "weight_dimension_numbers), or wrap GaLore in flr.compose.SplitRealAndImaginary.",
        )
        flat = _as_matrix(grad, dims)
        m, n = flat.shape
        r, left = min(self.rank, m, n), m >= n
        if key not in self.projector:
            self.projector[key] = jnp.zeros((m if left else n, r), grad.dtype)

        def svd():
            u, _, vh = jnp.linalg.svd(flat.astype(jnp.float32), full_matrices=False)
            return (u[:, :r] if left else vh[:r, :].T).astype(grad.dtype)

        old = self.projector[key]
        self.projector[key] = jax.lax.cond(refresh, svd, lambda: old)
        return self.projector[key].T @ flat if left else flat @ self.projector[key]

    def project_back(self, key, low, grad):
        """:math:`s\\,P_t N_t`, in the parameter's shape and dtype."""
        p, dims = self.projector[key], self.dims[key]
        m, n = _as_matrix(grad, dims).shape
        full = p @ low if m >= n else low @ p.T
        return (self.scale * _from_matrix(full, grad.shape, dims)).astype(grad.dtype)


_NO_PARAMS = Missing(
    "params",
    "GaLore runs its base optimizer on low-rank gradients, without the parameters (as "
    "optax.contrib.galore): pass one that does not read them (e.g. flr.optim.Adam(1.0)), "
    "and GaLore's own weight_decay= for weight decay.",
)


class _Matrices:
    """``weight_dimension_numbers``: static configuration, resolved per step as optax does."""

    # No __dict__, not a pytree: the engine keeps it as it is (a dict would be copied).
    __slots__ = ("spec",)

    def __init__(self, spec: Any):
        self.spec = spec

    def of(self, grads) -> dict[Any, GaLoreDimensionNumbers]:
        """The dimension numbers of each projected parameter, by key."""
        spec = self.spec
        if spec is None:
            return {k: GaLoreDimensionNumbers() for k, g in grads.items() if g.ndim == 2}
        if isinstance(spec, GaLoreDimensionNumbers):
            return {k: spec for k, g in grads.items() if g.ndim >= 2}
        if callable(spec):
            spec = spec(unflatten(grads))
        found, _ = jax.tree_util.tree_flatten_with_path(
            spec, is_leaf=lambda x: x is None or isinstance(x, GaLoreDimensionNumbers)
        )
        return {key_of(path): dims for path, dims in found if dims is not None}

    def checked(self, grads) -> dict[Any, GaLoreDimensionNumbers]:
        """:meth:`of`, each parameter's dimension numbers checked against its shape."""
        found = self.of(grads)
        for key, dims in found.items():
            if key in grads:
                _axes(grads[key].ndim, dims, key, tuple(grads[key].shape), self.spec)
        return found

    def __repr__(self) -> str:
        return repr(self.spec)


def _axes(
    ndim: int,
    dims: GaLoreDimensionNumbers,
    key: Any = None,
    shape: tuple[int, ...] = (),
    spec: Any = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The reduction and output axes, non-negative (optax's normalisation and checks).

    ``key``, ``shape`` and ``spec`` (``weight_dimension_numbers``) name the parameter
    in the error.
    """
    reduction, output = (
        tuple(a % ndim for a in ((axes,) if isinstance(axes, int) else axes)) if ndim else ()
        for axes in (dims.reduction_axis, dims.output_axis)
    )
    if ndim >= 2 and not set(reduction) & set(output) and len({*reduction, *output}) == ndim:
        return reduction, output
    where = "a parameter" if key is None else f"parameter {'/'.join(map(str, key))}"
    if ndim < 2:
        fix = "give it None in a tree of dimension numbers like the parameters (not projected)"
    else:
        rows = tuple(dict.fromkeys(reduction)) if len(set(reduction)) < ndim else (0,)
        cols = tuple(a for a in range(ndim) if a not in rows)
        fix = (
            f"for it, GaLoreDimensionNumbers(reduction_axis={rows if len(rows) > 1 else rows[0]}, "
            f"output_axis={cols if len(cols) > 1 else cols[0]})"
        )
    if isinstance(spec, GaLoreDimensionNumbers):
        fix += (
            "; one GaLoreDimensionNumbers applies to every parameter of rank >= 2: give "
            "parameters of other ranks their own in a tree like the parameters (None: not "
            "projected), or pass a callable of the parameters returning one"
        )
    expected = (
        "a parameter of rank >= 2 (GaLore projects matrices)"
        if ndim < 2
        else f"reduction and output axes that are disjoint and name each of its {ndim} axes "
        f"once (axes count modulo the rank, as in optax: these are {reduction} and {output})"
    )
    raise HyperparameterError(
        f"GaLore: weight_dimension_numbers gives {where} (shape {shape}) {dims}; expected "
        f"{expected}. Fix: {fix}."
    )


def _as_matrix(x: jax.Array, dims: GaLoreDimensionNumbers) -> jax.Array:
    """``x`` as the (reduction, output) matrix: its reduction axes first, then flattened."""
    reduction, output = _axes(x.ndim, dims)
    rows, cols = (math.prod(x.shape[a] for a in axes) for axes in (reduction, output))
    return x.transpose(reduction + output).reshape(rows, cols)


def _from_matrix(y: jax.Array, shape: tuple[int, ...], dims: GaLoreDimensionNumbers) -> jax.Array:
    """The inverse of :func:`_as_matrix` for a parameter of ``shape``."""
    reduction, output = _axes(len(shape), dims)
    order = reduction + output
    inverse = tuple(sorted(range(len(shape)), key=lambda i: order[i]))
    return y.reshape(tuple(shape[a] for a in order)).transpose(inverse)
