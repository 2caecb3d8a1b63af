"""How two sides' updates compare: :class:`MatchReport`, :class:`MismatchError`, bit by bit."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import numpy as np

from flr_nnx._errors import FlrError
from flr_nnx._optimizer import Key
from flr_nnx._tree import key_of

Bridge = Literal["optax", "nnx"]


class MismatchError(FlrError, AssertionError):
    """A hook optimizer and its optax twin parted: raised by :func:`assert_matches`.

    It is an ``AssertionError`` (pytest reports it as a failed assertion) and a
    :class:`flr_nnx.FlrError`.

    Attributes:
        step: the first step (0-based, the ``step`` given to ``grads_fn``) where
            the updates differ by more than the tolerance.
        key: the parameter key where they differ (the first one in key order).
        deviation: ``max|hook - optax| / max|optax|`` over that parameter
            (the absolute difference where optax's update is all zeros).
        report: the :class:`MatchReport` of the steps up to and including ``step``.
    """

    def __init__(self, message: str, *, step: int, key: Key, deviation: float, report: MatchReport):
        super().__init__(message)
        self.step, self.key, self.deviation, self.report = step, key, deviation, report


@dataclasses.dataclass(frozen=True)
class MatchReport:
    """What :func:`assert_matches` measured.

    Attributes:
        bridge: ``'optax'`` (:func:`flr_nnx.as_optax`) or ``'nnx'``
            (:class:`flr_nnx.NNXOptimizer`): how the hook optimizer ran.
        deviations: per step, the largest relative deviation over all parameters
            (``max|hook - optax| / max|optax|`` per parameter); ``0.0`` where the
            two sides agree in value.
        bit_identical: whether every update of every step had exactly the same
            bits on both sides (except that ``0.0`` and ``-0.0`` agree, as they
            are the same update, and so do NaNs with different payloads).
        keys: the parameter keys compared, in order.
    """

    bridge: Bridge
    deviations: tuple[float, ...]
    bit_identical: bool
    keys: tuple[Key, ...]

    @property
    def steps(self) -> int:
        """How many steps were compared."""
        return len(self.deviations)

    @property
    def max_deviation(self) -> float:
        """The largest relative deviation over all steps."""
        return max(self.deviations, default=0.0)

    def __str__(self) -> str:
        if self.bit_identical:
            return f"bit-identical over {self.steps} steps ({self.bridge} bridge)"
        return (
            f"max relative deviation {self.max_deviation:.3g} over {self.steps} steps "
            f"({self.bridge} bridge)"
        )


def _as_real(x: np.ndarray) -> np.ndarray:
    # A complex array as its (real, imaginary) pairs: each part is compared bit by bit.
    return np.stack([x.real, x.imag], axis=-1) if x.dtype.kind == "c" else x


def _bits(x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x).reshape(-1)
    if x.dtype.kind == "f" and x.dtype.itemsize in (1, 2, 4, 8):
        return flat.view(f"u{x.dtype.itemsize}")
    return flat


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = _as_real(a), _as_real(b)
    same = _bits(a) == _bits(b)
    if a.dtype.kind == "f":
        # A NaN is a NaN whatever its payload, and 0.0 and -0.0 are the same
        # update (``p + 0.0 == p - 0.0``); neither is a difference in arithmetic.
        a64, b64 = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
        same = same | (np.isnan(a64) & np.isnan(b64)) | ((a64 == 0) & (b64 == 0))
    return bool(np.all(same))


def _deviation(hook: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(absolute difference, reference scale, relative deviation) of one leaf."""
    wide = np.complex128 if np.iscomplexobj(hook) or np.iscomplexobj(ref) else np.float64
    h, r = hook.astype(wide), ref.astype(wide)  # |h - r| is the complex modulus for complex
    both_nan = np.isnan(h) & np.isnan(r)
    diff = np.where(both_nan, 0.0, np.abs(h - r))
    abs_diff = float(np.max(diff, initial=0.0))
    if np.isnan(abs_diff):
        abs_diff = float("inf")
    scale = float(np.max(np.where(np.isnan(r), 0.0, np.abs(r)), initial=0.0))
    rel = abs_diff / scale if scale > 0 else abs_diff
    return abs_diff, scale, rel


def compare_updates(
    hook: Any,
    ref: Any,
    *,
    name: str,
    bridge: Bridge = "optax",
    rtol: float = 0.0,
    atol: float = 0.0,
    check: bool = True,
) -> MatchReport:
    """Compares two sides' updates, stacked over steps, step by step.

    This is :func:`assert_matches`' comparison, for updates from
    :func:`run_cases` (``Run.updates``): with ``rtol = atol = 0`` every update
    must be bit-identical, else within ``atol + rtol * max|optax|`` per step and
    parameter.

    Args:
        hook: the hook side's updates, each leaf stacked over steps.
        ref: the optax side's updates, the same way.
        name: what to call the hook side in messages (a class name, say).
        bridge: the bridge the hook side ran through, for the report.
        rtol: relative tolerance per step, per parameter.
        atol: absolute tolerance per step, per parameter.
        check: if ``False``, only measure: never raise on a difference in value.

    Returns:
        The :class:`MatchReport` of every step.

    Raises:
        MismatchError: at the first step and parameter where the two sides part
            (with ``check``), or where their update dtypes or structures differ.
    """
    ref_paths, ref_def = jax.tree_util.tree_flatten_with_path(ref)
    hook_leaves, hook_def = jax.tree.flatten(hook)
    keys = tuple(key_of(path) for path, _ in ref_paths)
    if hook_def != ref_def:
        raise MismatchError(
            f"{name}'s updates are structured as {hook_def}, optax's as {ref_def}. Fix: the "
            "hook optimizer must return an update for every parameter optax updates.",
            step=0,
            key=(),
            deviation=float("inf"),
            report=MatchReport(bridge, (), False, keys),
        )
    hooks = [np.asarray(leaf) for leaf in hook_leaves]
    refs = [np.asarray(leaf) for _, leaf in ref_paths]
    steps = refs[0].shape[0] if refs else 0
    deviations: list[float] = []
    identical = True
    for i in range(steps):
        worst = 0.0
        for key, h_all, r_all in zip(keys, hooks, refs):
            h, r = h_all[i], r_all[i]
            if h.dtype != r.dtype:
                raise MismatchError(
                    f"{name} returns updates of dtype {h.dtype} for parameter {key}, optax "
                    f"returns {r.dtype}. Fix: return updates in the parameter's dtype.",
                    step=i,
                    key=key,
                    deviation=float("inf"),
                    report=MatchReport(bridge, (*deviations, float("inf")), False, keys),
                )
            same = _same_bits(h, r)
            identical = identical and same
            abs_diff, scale, rel = _deviation(h, r)
            worst = max(worst, rel)
            exact = rtol == 0 and atol == 0
            if not check:
                continue
            if (exact and not same) or (not exact and not abs_diff <= atol + rtol * scale):
                report = MatchReport(bridge, (*deviations, max(worst, rel)), False, keys)
                wide = np.complex128 if np.iscomplexobj(h) else np.float64
                at = int(np.argmax(np.abs(h.astype(wide) - r.astype(wide))))
                h_at, r_at = h.reshape(-1)[at], r.reshape(-1)[at]
                wanted = (
                    "bit-identical updates"
                    if exact
                    else f"|difference| <= atol + rtol * max|optax| = {atol + rtol * scale:.3g}"
                )
                raise MismatchError(
                    f"{name} and its optax twin part at step {i}, parameter {key}: max "
                    f"|difference| {abs_diff:.3g} (relative {rel:.3g}; at flat index {at}: "
                    f"hook {h_at!r}, optax {r_at!r}); expected {wanted} ({bridge} bridge). "
                    "Fix: compare the arithmetic of this step with optax's source, or pass "
                    "a tolerance (rtol) if the difference is rounding by design.",
                    step=i,
                    key=key,
                    deviation=rel,
                    report=report,
                )
        deviations.append(worst)
    return MatchReport(bridge, tuple(deviations), identical, keys)
