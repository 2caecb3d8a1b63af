"""The one table of optimizers under test: every property test is driven by it.

Each entry: a name, a factory of the hook optimizer, the optax twin, and whether
the two are expected to be bit-identical under jit on CPU (else: the reason and
the per-step relative tolerance). Add new optimizers here, in your section.

Per-entry test settings in ``extra`` (read by tests/test_zoo.py; all optional):

- ``"converge"``: factory of the hook optimizer for the convergence tests
  (parabola and Rosenbrock); default ``make``.
- ``"rosenbrock"``: factory for Rosenbrock only; default ``extra["converge"]``.
- ``"converge_steps"``: training steps for both problems; default 2000. Passing:
  final loss < 1e-3 x initial on the parabola, < 1e-2 x initial on Rosenbrock.
- ``"bf16_rtol"``: per-step relative tolerance in bfloat16 for an entry that is
  bit-identical in float32 only (say why in ``why_not_bit_identical``).

``needs_loss=True`` passes the loss as optax's ``value=`` to both sides.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import flr_nnx as flr


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    make: Callable[[], flr.optim.Optimizer]
    twin: Callable[[], optax.GradientTransformation]
    bit_identical: bool = True
    why_not_bit_identical: str = ""
    rtol: float = 1e-6
    needs_loss: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def scalars_as_vectors(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` with every rank-0 leaf seen as a vector of one element (``optax.sm3`` fails on
    scalars, which its flr twin takes as such vectors)."""

    def wide(tree):
        return jax.tree.map(lambda x: x.reshape(1) if x.ndim == 0 else x, tree)

    def init(params):
        return tx.init(wide(params))

    def update(updates, state, params=None):
        new, state = tx.update(wide(updates), state, wide(params))
        return jax.tree.map(lambda n, u: n.reshape(u.shape), new, updates), state

    return optax.GradientTransformation(init, update)


def lookahead_twin(fast: optax.GradientTransformation, *args: Any) -> optax.GradientTransformation:
    """``optax.lookahead`` on the model's (fast) parameters, its slow ones in the state.

    optax's lookahead takes ``LookaheadParams(fast, slow)``; the zoo passes plain
    parameters. Its slow updates are applied here with ``optax.apply_updates``
    (as a user of optax would) and its fast updates returned: the numbers a user
    of ``optax.lookahead`` gets, as ``flr.compose.Lookahead`` keeps ``slow``.
    """
    tx = optax.lookahead(fast, *args)

    def init(params):
        return tx.init(optax.LookaheadParams.init_synced(params)), params

    def update(updates, state, params, **_):
        inner, slow = state
        both, inner = tx.update(updates, inner, optax.LookaheadParams(fast=params, slow=slow))
        return both.fast, (inner, optax.apply_updates(slow, both.slow))

    return optax.GradientTransformationExtraArgs(init, update)


# -- section F helpers (issue 14): Sophia reads an objective, optax's extra argument obj_fn=


def _sophia_objective(params):
    """A stand-in objective for Sophia's Hessian estimate (diagonal x**2), whatever the tree."""
    real = [x if jnp.iscomplexobj(x) else x.astype(jnp.float32) for x in jax.tree.leaves(params)]
    return sum(jnp.sum(flr.helpers.abs_sq(x) ** 2) / 12 for x in real)


class _SophiaWithObjective(flr.optim.Sophia):
    """Sophia given ``obj_fn=`` at every step, as a training loop passes it to ``update``."""

    def call_model(self, grads, params, loss, **_):
        return super().call_model(grads=grads, params=params, loss=loss, obj_fn=_sophia_objective)


def _sophia_twin(*args, **kwargs):
    """optax.contrib.sophia given the same ``obj_fn=`` at every step."""
    tx = optax.contrib.sophia(*args, **kwargs)

    def update(updates, state, params=None, **extra):
        return tx.update(updates, state, params, **{**extra, "obj_fn": _sophia_objective})

    return optax.GradientTransformationExtraArgs(tx.init, update)


def _without_deprecation(make, *args, **kwargs):
    """``make(*args, **kwargs)``, its DeprecationWarning silenced (optimistic_adam, v1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return make(*args, **kwargs)


# -- end of section F helpers


# -- section H helpers (issue 14): LBFGS's line search re-evaluates the loss, optax's
# extra arguments value_fn= and grad=


def _lbfgs_objective(params):
    """The zoo's loss (``loss_value`` in tests/test_zoo.py) as a function of the parameters."""

    def squares(p):  # |p|^2: the real part alone of a complex parameter is not its size
        return flr.helpers.abs_sq(p) if jnp.iscomplexobj(p) else jnp.square(p.astype(jnp.float32))

    return 1.0 + 0.5 * sum(jnp.sum(squares(p)) for p in jax.tree.leaves(params))


def _problem(name):
    """test_zoo's convergence problem ``name`` (imported when a test runs)."""
    import test_zoo

    return test_zoo.PROBLEMS[name][0]


class _LBFGSWithObjective(flr.optim.LBFGS):
    """LBFGS given ``value_fn=`` and ``grad=`` at every step, as a training loop passes them
    to ``update`` (``value=`` is the zoo's loss); ``objective`` a function of a nested dict."""

    def __init__(self, *args, objective=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective

    def call_model(self, grads, params, loss, **_):
        if self.objective is None:
            value_fn = _lbfgs_objective
        else:
            value_fn = lambda flat: self.objective(flr.helpers.unflatten(flat))  # noqa: E731
        return super().call_model(
            grads=grads, params=params, loss=loss, grad=grads, value_fn=value_fn
        )


def _lbfgs_twin(*args, **kwargs):
    """optax.lbfgs given ``value_fn=`` and ``grad=`` (the updates) at every step. Only
    ``value=`` of the other extra arguments is passed on: optax's line search refuses
    those ``value_fn`` does not name (the zoo's ``foo=1``), which flr's ignores."""
    tx = optax.lbfgs(*args, **kwargs)

    def update(updates, state, params=None, value=None, **_):
        extra = {"value": value, "grad": updates, "value_fn": _lbfgs_objective}
        return tx.update(updates, state, params, **extra)

    def init(params):
        # optax's state, its weakly typed scalars (line search diagnostics, read by no step)
        # made strong as a step makes them: else the zoo's jitted step recompiles once
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), tx.init(params))

    return optax.GradientTransformationExtraArgs(init, update)


# -- end of section H helpers
# -- section J helpers (issue 14): DPSGD reads per-example gradients; the harness gives one
# gradient per parameter, i.e. a batch of one example (tests/test_dpsgd.py: real batches).


class _DPSGDOfOne(flr.optim.DPSGD):
    """DPSGD on a batch of one example: the harness's gradient given its batch axis."""

    per_example_grads = False

    def call_model(self, grads, **extra):
        return super().call_model({k: g[None] for k, g in grads.items()}, **extra)


def _dpsgd_of_one_twin(*args, **kwargs):
    """optax.contrib.dpsgd given the same gradient with a batch axis of one."""
    with warnings.catch_warnings():  # optax's dpsgd passes its deprecated `seed=` on
        warnings.simplefilter("ignore", DeprecationWarning)
        tx = optax.contrib.dpsgd(*args, **kwargs)

    def update(updates, state, params=None, **_):
        return tx.update(jax.tree.map(lambda g: g[None], updates), state, params)

    return optax.GradientTransformationExtraArgs(tx.init, update)


def _sam_twin(*args, **kwargs):
    """optax.contrib.sam, whose update takes no extra argument but ``grad_fn=``: the
    zoo's unknown one (``foo=``) is dropped, as other optax transformations ignore it."""
    tx = optax.contrib.sam(*args, **kwargs)

    def update(updates, state, params=None, **_):
        return tx.update(updates, state, params)

    return optax.GradientTransformationExtraArgs(tx.init, update)


# -- end of section J helpers


ZOO: list[Entry] = [
    Entry("Adam", lambda: flr.optim.Adam(1e-2), lambda: optax.adam(1e-2)),
    # -- section A: SGD, AdamW, NAdam, NAdamW, Adamax, AMSGrad, AdaBelief, RAdam, Lion, SignSGD
    Entry(
        "SGD",
        lambda: flr.optim.SGD(1e-2, momentum=0.9, nesterov=True),
        lambda: optax.sgd(1e-2, momentum=0.9, nesterov=True),
        extra={"rosenbrock": lambda: flr.optim.SGD(1e-3, momentum=0.9, nesterov=True)},
    ),
    Entry(
        "AdamW",  # "no weight decay on biases and norms": one key predicate, valid for optax too
        lambda: flr.optim.AdamW(
            1e-2,
            weight_decay=0.1,
            mask=flr.helpers.key_mask(lambda k: k[-1] not in ("bias", "scale")),
        ),
        lambda: optax.adamw(
            1e-2,
            weight_decay=0.1,
            mask=flr.helpers.key_mask(lambda k: k[-1] not in ("bias", "scale")),
        ),
        # weight decay moves the minimum: convergence is checked without it
        extra={"converge": lambda: flr.optim.AdamW(1e-2, weight_decay=0.0)},
    ),
    Entry(
        "NAdam",
        lambda: flr.optim.NAdam(1e-2, eps_root=1e-8),
        lambda: optax.nadam(1e-2, eps_root=1e-8),
    ),
    Entry(
        "NAdamW",  # a schedule, and optax's callable mask convention
        lambda: flr.optim.NAdamW(
            optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 1000),
            weight_decay=0.05,
            mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        ),
        lambda: optax.nadamw(
            optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 1000),
            weight_decay=0.05,
            mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        ),
        extra={"converge": lambda: flr.optim.NAdamW(1e-2, weight_decay=0.0)},
    ),
    Entry("Adamax", lambda: flr.optim.Adamax(1e-2), lambda: optax.adamax(1e-2)),
    Entry(
        "AMSGrad",
        lambda: flr.optim.AMSGrad(1e-2, mu_dtype="bfloat16"),
        lambda: optax.amsgrad(1e-2, mu_dtype="bfloat16"),
    ),
    Entry(
        "AdaBelief",
        lambda: flr.optim.AdaBelief(1e-2, nesterov=True),
        lambda: optax.adabelief(1e-2, nesterov=True),
        bit_identical=False,
        why_not_bit_identical=(
            "same arithmetic as optax, but in the test's combined as_optax program XLA:CPU "
            "contracts one multiply-add differently on a scalar leaf (1 ulp at step 1); the "
            "NNX bridge and separately jitted runs are bit-identical"
        ),
    ),
    Entry(
        "RAdam",
        lambda: flr.optim.RAdam(1e-2, nesterov=True),
        lambda: optax.radam(1e-2, nesterov=True),
        # its first steps are momentum SGD, which 1e-2 makes diverge on Rosenbrock (optax too)
        extra={
            "rosenbrock": lambda: flr.optim.RAdam(3e-3, nesterov=True),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "Lion",
        lambda: flr.optim.Lion(
            3e-3, mu_dtype="bfloat16", mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        lambda: optax.lion(
            3e-3, mu_dtype="bfloat16", mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        # sign updates need a decaying step to settle; weight decay moves the minimum
        extra={
            "converge": lambda: flr.optim.Lion(
                optax.exponential_decay(3e-2, 300, 0.5), weight_decay=0.0
            )
        },
    ),
    Entry(
        "SignSGD",
        lambda: flr.optim.SignSGD(optax.exponential_decay(1e-2, 500, 0.5)),
        lambda: optax.sign_sgd(optax.exponential_decay(1e-2, 500, 0.5)),
        extra={"converge_steps": 4000},  # sign steps zigzag down Rosenbrock's valley
    ),
    # -- end of section A
    # -- section B: RMSProp, Adagrad, Adafactor, LAMB, PolyakSGD, Muon, building blocks
    Entry(
        "RMSProp",
        lambda: flr.optim.RMSProp(1e-2, momentum=0.9, centered=True),
        lambda: optax.rmsprop(1e-2, momentum=0.9, centered=True),
        extra={"rosenbrock": lambda: flr.optim.RMSProp(1e-3, momentum=0.9, centered=True)},
    ),
    Entry("Adagrad", lambda: flr.optim.Adagrad(0.1), lambda: optax.adagrad(0.1)),
    Entry(
        "Adafactor",  # factors every matrix here: row/column statistics, not a full moment
        lambda: flr.optim.Adafactor(1e-2, min_dim_size_to_factor=2, weight_decay_rate=1e-3),
        lambda: optax.adafactor(1e-2, min_dim_size_to_factor=2, weight_decay_rate=1e-3),
        # steps scaled by the parameters' RMS crawl; Rosenbrock's valley needs momentum and decay
        extra={
            "converge": lambda: flr.optim.Adafactor(3e-2, multiply_by_parameter_scale=False),
            "rosenbrock": lambda: flr.optim.Adafactor(
                optax.exponential_decay(3e-2, 300, 0.5),
                multiply_by_parameter_scale=False,
                momentum=0.9,
            ),
        },
    ),
    Entry(
        "LAMB",
        lambda: flr.optim.LAMB(
            1e-2, weight_decay=1e-2, mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        lambda: optax.lamb(
            1e-2, weight_decay=1e-2, mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        # trust-ratio steps are lr * ||params|| long: a decaying rate settles in the valley
        extra={
            "converge": lambda: flr.optim.LAMB(1e-2),
            "rosenbrock": lambda: flr.optim.LAMB(optax.exponential_decay(1e-1, 200, 0.5)),
        },
    ),
    Entry("PolyakSGD", flr.optim.PolyakSGD, optax.polyak_sgd, needs_loss=True),
    Entry(
        "Muon",  # Newton-Schulz on the matrices, AdamW on the rest
        lambda: flr.optim.Muon(1e-2),
        lambda: optax.contrib.muon(1e-2),
    ),
    Entry(
        "Chain(blocks)",  # ClipByGlobalNorm, Adam's scaling, AddDecayedWeights, ScaleByLearningRate
        lambda: flr.compose.Chain(
            flr.optim.ClipByGlobalNorm(1.0),
            flr.optim.Adam(1.0),
            flr.optim.AddDecayedWeights(1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
            flr.optim.Clip(0.5),
            flr.optim.ScaleByLearningRate(1e-2),
        ),
        lambda: optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.scale_by_adam(),
            optax.add_decayed_weights(1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
            optax.clip(0.5),
            optax.scale_by_learning_rate(1e-2),
        ),
        extra={
            "converge": lambda: flr.compose.Chain(
                flr.optim.ClipByGlobalNorm(1.0), flr.optim.ScaleByLearningRate(0.1)
            ),
            "rosenbrock": lambda: flr.compose.Chain(
                flr.optim.ClipByGlobalNorm(1.0),
                flr.optim.Adam(1.0),
                flr.optim.ScaleByLearningRate(optax.exponential_decay(5e-2, 500, 0.5)),
            ),
        },
    ),
    # -- end of section B
    # -- section C (issue 14)
    Entry("Yogi", lambda: flr.optim.Yogi(1e-2), lambda: optax.yogi(1e-2)),
    Entry(
        "Adadelta",  # decay on the gradient of the kernels only
        lambda: flr.optim.Adadelta(
            1.0,
            weight_decay=1e-3,
            weight_decay_mask=flr.helpers.key_mask(lambda k: k[-1] != "bias"),
        ),
        lambda: optax.adadelta(
            1.0,
            weight_decay=1e-3,
            weight_decay_mask=flr.helpers.key_mask(lambda k: k[-1] != "bias"),
        ),
        # its step sizes adapt slowly: Rosenbrock's valley needs a decaying rate and more steps
        extra={
            "converge": lambda: flr.optim.Adadelta(1.0),
            "rosenbrock": lambda: flr.optim.Adadelta(
                optax.exponential_decay(1.0, 1000, 0.5), eps=1e-5
            ),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "Adan",
        lambda: flr.optim.Adan(1e-2, weight_decay=1e-3),
        lambda: optax.adan(1e-2, weight_decay=1e-3),
        extra={"converge": lambda: flr.optim.Adan(1e-2)},
    ),
    Entry(
        "AdamaxW",
        lambda: flr.optim.AdamaxW(
            1e-2, weight_decay=0.1, mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        lambda: optax.adamaxw(
            1e-2, weight_decay=0.1, mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        extra={"converge": lambda: flr.optim.AdamaxW(1e-2, weight_decay=0.0)},
    ),
    Entry(
        "Signum",
        lambda: flr.optim.Signum(optax.exponential_decay(1e-2, 500, 0.5)),
        lambda: optax.signum(optax.exponential_decay(1e-2, 500, 0.5)),
        extra={"converge_steps": 4000},  # sign steps zigzag down Rosenbrock's valley
    ),
    Entry("Rprop", lambda: flr.optim.Rprop(1e-2), lambda: optax.rprop(1e-2)),
    Entry(
        "OptimisticGradientDescent",
        lambda: flr.optim.OptimisticGradientDescent(1e-2, alpha=0.7, beta=0.1),
        lambda: optax.optimistic_gradient_descent(1e-2, alpha=0.7, beta=0.1),
        # plain gradient steps: Rosenbrock's valley needs a small rate and more steps
        extra={
            "rosenbrock": lambda: flr.optim.OptimisticGradientDescent(2e-3, alpha=0.7, beta=0.1),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "OptimisticAdamV2",
        lambda: flr.optim.OptimisticAdamV2(1e-2, beta=0.5, mu_dtype="bfloat16"),
        lambda: optax.optimistic_adam_v2(1e-2, beta=0.5, mu_dtype="bfloat16"),
    ),
    # -- end of section C
    # -- section D (issue 14)
    Entry(
        "LARS",
        lambda: flr.optim.LARS(
            1e-2,
            weight_decay=1e-3,
            trust_ratio_mask=flr.helpers.key_mask(lambda k: k[-1] != "bias"),
            nesterov=True,
        ),
        lambda: optax.lars(
            1e-2,
            weight_decay=1e-3,
            trust_ratio_mask=flr.helpers.key_mask(lambda k: k[-1] != "bias"),
            nesterov=True,
        ),
        # trust-ratio steps are lr * c * ||params|| long: a decaying rate settles
        extra={
            "converge": lambda: flr.optim.LARS(
                optax.exponential_decay(0.1, 200, 0.5), trust_coefficient=1.0
            )
        },
    ),
    Entry(
        "Fromage",
        lambda: flr.optim.Fromage(1e-2),
        lambda: optax.fromage(1e-2),
        # steps are lr * ||params|| long: a decaying rate settles in Rosenbrock's valley
        extra={"converge": lambda: flr.optim.Fromage(optax.exponential_decay(0.1, 200, 0.5))},
    ),
    Entry(
        "NovoGrad",
        lambda: flr.optim.NovoGrad(1e-2, weight_decay=1e-3),
        lambda: optax.novograd(1e-2, weight_decay=1e-3),
    ),
    Entry(
        "SM3",  # the twin sees the dict tree's scalar as a vector: optax.sm3 fails on scalars
        lambda: flr.optim.SM3(1e-2),
        lambda: scalars_as_vectors(optax.sm3(1e-2)),
        extra={"converge": lambda: flr.optim.SM3(0.1)},
    ),
    Entry(
        "ADOPT",
        lambda: flr.optim.ADOPT(1e-2, nesterov=True),
        lambda: optax.contrib.adopt(1e-2, nesterov=True),
    ),
    Entry(
        "AdEMAMix",
        lambda: flr.optim.AdEMAMix(
            1e-2, weight_decay=1e-3, mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        lambda: optax.contrib.ademamix(
            1e-2, weight_decay=1e-3, mask=flr.helpers.key_mask(lambda k: k[-1] != "bias")
        ),
        # weight decay moves the minimum; a faster slow moment settles in 2000 steps
        extra={"converge": lambda: flr.optim.AdEMAMix(1e-2, b3=0.99, alpha=2.0)},
    ),
    Entry(
        "SimplifiedAdEMAMix",
        lambda: flr.optim.SimplifiedAdEMAMix(1e-3, alpha=2.0),
        lambda: optax.contrib.simplified_ademamix(1e-3, alpha=2.0),
    ),
    Entry(
        "MADGRAD",
        lambda: flr.optim.MADGRAD(1e-2, weight_decay=1e-3),
        lambda: optax.contrib.madgrad(1e-2, weight_decay=1e-3),
        bit_identical=False,
        why_not_bit_identical=(
            "bit-identical in all 8 combinations; inside optax.MultiSteps' lax.cond XLA:CPU "
            "fuses the new iterate (1 - momentum) * z + momentum * param differently on the "
            "two sides: 1 ulp of the iterate (1.2e-7 at abs(param) ~ 1), which its difference "
            "with param (the update, ~5e-3) shows as 2.4e-5 relative (bit-identical there "
            "with momentum=0)"
        ),
        rtol=2.4e-5,
        extra={"converge": lambda: flr.optim.MADGRAD(1e-2)},  # weight decay moves the minimum
    ),
    # -- end of section D
    # -- section E (issue 14)
    Entry(
        "AcProp",
        lambda: flr.optim.AcProp(1e-2, weight_decay=1e-3),
        lambda: optax.contrib.acprop(1e-2, weight_decay=1e-3),
        extra={
            "converge": lambda: flr.optim.AcProp(1e-2),
            # its first step is plain SGD, and eps=1e-16 lets Rosenbrock's flat valley
            # blow the step up (optax's too): a larger eps and a faster b2 there
            "rosenbrock": lambda: flr.optim.AcProp(1e-3, b2=0.99, eps=1e-3),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "DoG",
        lambda: flr.optim.DoG(weight_decay=1e-3),
        lambda: optax.contrib.dog(weight_decay=1e-3),
        extra={  # its own step (learning_rate=1) crawls down Rosenbrock's valley (optax's too)
            "converge": flr.optim.DoG,
            "rosenbrock": lambda: flr.optim.DoG(0.5),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "DoWG",
        lambda: flr.optim.DoWG(optax.linear_schedule(1.0, 0.5, 100)),
        lambda: optax.contrib.dowg(optax.linear_schedule(1.0, 0.5, 100)),
        extra={  # its own step (learning_rate=1) crawls down Rosenbrock's valley (optax's too)
            "converge": flr.optim.DoWG,
            "rosenbrock": lambda: flr.optim.DoWG(0.5),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "COCOB",
        lambda: flr.optim.COCOB(weight_decay=1e-2),
        lambda: optax.contrib.cocob(weight_decay=1e-2),
        extra={  # its first bets are cautious (alpha=100): Rosenbrock's valley takes long
            "converge": flr.optim.COCOB,
            "rosenbrock": lambda: flr.optim.COCOB(alpha=3.0),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "Momo",
        lambda: flr.optim.Momo(1e-1, weight_decay=1e-3, adapt_lower_bound=True),
        lambda: optax.contrib.momo(1e-1, weight_decay=1e-3, adapt_lower_bound=True),
        needs_loss=True,
        extra={"converge": flr.optim.Momo},
    ),
    Entry(
        "MomoAdam",
        lambda: flr.optim.MomoAdam(1e-1, weight_decay=1e-3, adapt_lower_bound=True),
        lambda: optax.contrib.momo_adam(1e-1, weight_decay=1e-3, adapt_lower_bound=True),
        needs_loss=True,
        extra={"converge": lambda: flr.optim.MomoAdam(1e-1)},
    ),
    Entry(
        "DAdaptAdamW",
        lambda: flr.optim.DAdaptAdamW(1e-1, weight_decay=1e-3),
        lambda: optax.contrib.dadapt_adamw(1e-1, weight_decay=1e-3),
        extra={  # its estimated step overshoots in Rosenbrock's valley without a decay
            "converge": flr.optim.DAdaptAdamW,
            "rosenbrock": lambda: flr.optim.DAdaptAdamW(optax.cosine_decay_schedule(1.0, 4000)),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "Prodigy",
        lambda: flr.optim.Prodigy(1e-1, weight_decay=1e-3, safeguard_warmup=True),
        lambda: optax.contrib.prodigy(1e-1, weight_decay=1e-3, safeguard_warmup=True),
        extra={"converge": flr.optim.Prodigy},
    ),
    # -- end of section E
    # -- section F (issue 14)
    Entry(
        "NoisySGD",  # the noise is drawn from a PRNG key kept as state
        lambda: flr.optim.NoisySGD(1e-2, key=0),
        lambda: optax.noisy_sgd(1e-2, key=0),
        extra={
            "rosenbrock": lambda: flr.optim.NoisySGD(1e-3, eta=1e-4, key=0),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "ReduceOnPlateau",  # after momentum SGD; reduces (and cools down) within the 8 steps
        lambda: flr.compose.Chain(
            flr.optim.SGD(1e-2, momentum=0.9),
            flr.optim.ReduceOnPlateau(factor=0.5, patience=2, rtol=1e-2, cooldown=1),
        ),
        lambda: optax.chain(
            optax.sgd(1e-2, momentum=0.9),
            optax.contrib.reduce_on_plateau(factor=0.5, patience=2, rtol=1e-2, cooldown=1),
        ),
        needs_loss=True,
        extra={
            "converge": lambda: flr.compose.Chain(
                flr.optim.SGD(1e-2, momentum=0.9, nesterov=True), flr.optim.ReduceOnPlateau()
            ),
            "rosenbrock": lambda: flr.compose.Chain(
                flr.optim.SGD(1e-3, momentum=0.9, nesterov=True), flr.optim.ReduceOnPlateau()
            ),
        },
    ),
    Entry(
        "Sophia",  # obj_fn= at every step; a Hessian estimate at steps 1, 3, 5, 7
        lambda: _SophiaWithObjective(1e-2, update_interval=2, gamma=0.5),
        lambda: _sophia_twin(1e-2, update_interval=2, gamma=0.5),
        # clipped steps are sign-like: a decaying rate settles; weight decay moves the minimum
        extra={
            "converge": lambda: _SophiaWithObjective(
                optax.exponential_decay(3e-2, 300, 0.5), weight_decay=0.0
            )
        },
    ),
    Entry(
        "OptimisticAdam",  # optax's deprecated first version; Nesterov by default, as optax
        lambda: _without_deprecation(flr.optim.OptimisticAdam, 1e-2, optimism=5e-3),
        lambda: _without_deprecation(optax.optimistic_adam, 1e-2, optimism=5e-3),
    ),
    # -- end of section F
    # -- section G (issue 14)
    Entry(
        "Mechanize(Adam)",  # Mechanic learns the scale of Adam's steps
        lambda: flr.compose.Mechanize(flr.optim.Adam(1e-2)),
        lambda: optax.contrib.mechanize(optax.adam(1e-2)),
        # the learned scale creeps along Rosenbrock's valley (optax's too: 0.37 after 2000
        # steps of Adam(1.0), 0.056 after 10000 of Adam(0.1), 0.031 after 16000)
        extra={
            "converge": lambda: flr.compose.Mechanize(flr.optim.Adam(0.1)),
            "converge_steps": 16000,
        },
    ),
    Entry(
        # complex parameters as real pairs (tests/test_complex.py)
        "SplitRealAndImaginary(SGD)",
        lambda: flr.compose.SplitRealAndImaginary(flr.optim.SGD(1e-2, momentum=0.9)),
        lambda: optax.contrib.split_real_and_imaginary(optax.sgd(1e-2, momentum=0.9)),
        extra={
            "rosenbrock": lambda: flr.compose.SplitRealAndImaginary(
                flr.optim.SGD(1e-3, momentum=0.9)
            )
        },
    ),
    Entry(
        "Lookahead(Adam)",  # slow weights as state; the twin passes optax LookaheadParams
        lambda: flr.compose.Lookahead(flr.optim.Adam(1e-2), sync_period=3, slow_step_size=0.5),
        lambda: lookahead_twin(optax.adam(1e-2), 3, 0.5),
    ),
    # -- end of section G
    # -- section H (issue 14)
    Entry(
        "LBFGS",  # zoom line search on value_fn= (the zoo's loss), grad= at every step
        lambda: _LBFGSWithObjective(),
        lambda: _lbfgs_twin(),
        needs_loss=True,
        extra={
            "converge": lambda: _LBFGSWithObjective(objective=_problem("parabola")),
            "rosenbrock": lambda: _LBFGSWithObjective(objective=_problem("rosenbrock")),
            "converge_steps": 100,
        },
    ),
    # -- end of section H
    # -- section I (issue 14)
    Entry(
        # the evaluation point x (eval_params) is checked in tests/test_eval_params.py
        "ScheduleFree(SGD)",
        lambda: flr.compose.ScheduleFree(flr.optim.SGD(1e-2), 1e-2),
        lambda: optax.contrib.schedule_free(optax.sgd(1e-2), 1e-2),
        extra={
            "converge": lambda: flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1),
            "rosenbrock": lambda: flr.compose.ScheduleFree(flr.optim.SGD(2e-3), 2e-3),
        },
    ),
    Entry(
        "ScheduleFreeSGD",
        lambda: flr.optim.ScheduleFreeSGD(1e-2, warmup_steps=3, weight_decay=1e-3),
        lambda: optax.contrib.schedule_free_sgd(1e-2, warmup_steps=3, weight_decay=1e-3),
        extra={
            "converge": lambda: flr.optim.ScheduleFreeSGD(0.1, warmup_steps=10),
            "rosenbrock": lambda: flr.optim.ScheduleFreeSGD(2e-3, warmup_steps=10),
        },
    ),
    Entry(
        "ScheduleFreeAdamW",
        lambda: flr.optim.ScheduleFreeAdamW(1e-2, warmup_steps=3, weight_decay=1e-3),
        lambda: optax.contrib.schedule_free_adamw(1e-2, warmup_steps=3, weight_decay=1e-3),
        extra={"converge": lambda: flr.optim.ScheduleFreeAdamW(1e-2, warmup_steps=10)},
    ),
    # -- end of section I
    # -- section J (issue 14)
    Entry(
        "SAM(SGD, SGD)",  # adversarial and outer steps alternate (opaque mode: tests/test_sam.py)
        lambda: flr.compose.SAM(flr.optim.SGD(1e-2, momentum=0.9), flr.optim.SGD(1e-3)),
        lambda: _sam_twin(optax.sgd(1e-2, momentum=0.9), optax.sgd(1e-3)),
        extra={
            "rosenbrock": lambda: flr.compose.SAM(
                flr.optim.SGD(1e-3, momentum=0.9), flr.optim.SGD(1e-4)
            ),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "DPSGD (batch of 1)",  # per-example gradients (real batches: tests/test_dpsgd.py)
        lambda: _DPSGDOfOne(1e-2, l2_norm_clip=1.0, noise_multiplier=0.5, seed=0, momentum=0.9),
        lambda: _dpsgd_of_one_twin(1e-2, 1.0, 0.5, 0, momentum=0.9),
        extra={
            "converge": lambda: _DPSGDOfOne(1e-2, 1e3, 0.0, 0, momentum=0.9, nesterov=True),
            "rosenbrock": lambda: _DPSGDOfOne(1e-3, 1e3, 0.0, 0, momentum=0.9, nesterov=True),
        },
    ),
    # -- end of section J
    # -- section K (issue 14)
    Entry(
        "GaLore",  # rank 2: the (5, 4) and (3, 4) kernels are projected, with an SVD at steps
        # 0, 3 and 6; the (4, 2) kernel at full rank; the others (ranks 0, 1, 4) are not
        lambda: flr.optim.GaLore(1e-2, rank=2, update_proj_gap=3, weight_decay=1e-2),
        lambda: optax.contrib.galore(1e-2, rank=2, update_proj_gap=3, weight_decay=1e-2),
        extra={"converge": lambda: flr.optim.GaLore(1e-1, rank=1, update_proj_gap=10)},
    ),
    Entry(
        "Lookahead(Adam, reset_state)",  # Adam's state restarts at the syncs after steps 3 and 6
        lambda: flr.compose.Lookahead(flr.optim.Adam(1e-2), 3, 0.5, reset_state=True),
        lambda: lookahead_twin(optax.adam(1e-2), 3, 0.5, True),
    ),
    # -- end of section K
]
