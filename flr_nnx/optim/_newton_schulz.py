"""Newton–Schulz orthogonalization, as optax's Muon computes it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

PRESETS = {
    "standard": (3.4445, -4.7750, 2.0315),
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


def _ns_step(x: jax.Array, c: jax.Array) -> jax.Array:
    # f(X) = c0 X + (c1 A + c2 A^2) X with A = X X^T.
    a = x @ x.T.conj()
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _aol_first_step(x: jax.Array, c: jax.Array, eps: float = 1e-8) -> jax.Array:
    a = x @ x.T.conj()
    s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.abs(a).sum(axis=-1), min=eps)), -1)
    x, a = x * s, a * s * s.transpose(-1, -2)
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _schatten_first_step(x: jax.Array, c: jax.Array, eps: float = 1e-8) -> jax.Array:
    a = x @ x.T
    norm = jnp.clip(jnp.linalg.norm(a, ord="fro", axis=(-2, -1)), min=eps)
    s = jnp.expand_dims(jax.lax.rsqrt(norm), (0, -1))
    x, a = x * s, a * s**2
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def newton_schulz(
    x: jax.Array, coeffs: jax.Array, steps: int, preconditioning: str, eps: float
) -> jax.Array:
    """Approximately orthogonalizes the matrix ``x`` (the same iteration as optax)."""
    transposed = x.shape[0] > x.shape[1]
    if transposed:  # f(X) = f(X^T)^T, and the short side makes X X^T cheaper
        x = x.T
    if preconditioning == "frobenius":
        x /= jnp.linalg.norm(x, ord="fro") + eps
    elif preconditioning == "spectral":
        x /= jnp.linalg.norm(x, ord=2) + eps
    first = {"aol": _aol_first_step, "schatten": _schatten_first_step}.get(preconditioning)

    def iterate(i, x, c):
        if first is None:
            return _ns_step(x, c)
        return jax.lax.cond(i == 0, lambda x: first(x, c), lambda x: _ns_step(x, c), x)

    coeffs = coeffs.astype(x.dtype)
    if coeffs.ndim == 1:
        x = jax.lax.fori_loop(0, steps, lambda i, x: iterate(i, x, coeffs), x, unroll=True)
    else:

        def body(carry, c):
            i, x = carry
            return (i + 1, iterate(i, x, c)), None

        (_, x), _ = jax.lax.scan(body, (jnp.asarray(0, dtype=jnp.int32), x), coeffs)
    return x.T if transposed else x
