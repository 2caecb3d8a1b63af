"""The Adam optimizer of the "Implementing Optimizers" tutorial, verbatim.

The only change from the tutorial text is the corrected helper signature
``_build(self, key, x)`` (the tutorial's ``_build(self, key)`` used an
undefined ``x``). Note the Greek attribute names: valid Python.
"""

import jax.numpy as jnp

import flr_nnx as flr

Optimizer = flr.optim.Optimizer


class Adam(Optimizer):
    def __init__(self, η=0.001, β1=0.9, β2=0.999, ε=1e-8):
        self.η = η
        self.β1 = β1
        self.β2 = β2
        self.ε = ε

        self.m = {}
        self.v = {}
        self.t = jnp.zeros((), dtype=jnp.uint32)

    def _build(self, key, x):
        if key not in self.m:
            self.m[key] = jnp.zeros_like(x)

        if key not in self.v:
            self.v[key] = jnp.zeros_like(x)

    def call_param(self, key, grad, **_):
        self._build(key, grad)

        m = self.β1 * self.m[key] + (1 - self.β1) * grad
        v = self.β2 * self.v[key] + (1 - self.β2) * grad**2

        m_hat = m / (1 - self.β1**self.t)
        v_hat = v / (1 - self.β2**self.t)

        self.m[key] = m
        self.v[key] = v

        return self.η / (jnp.sqrt(v_hat) + self.ε) * m_hat

    def call_model(self, grads, **_):
        self.t += 1
        return grads
