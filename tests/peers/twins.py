"""How the peers' test suites build optimizers when they run against flr_nnx.

The ported files in ``tests/peers/`` change nothing but how an optimizer is
built; everything they need for that lives here:

- :data:`OPTAX_TWINS`: optax's factory names (as the optax tests spell them) ->
  the flr_nnx twin, for every optax optimizer the zoo has a twin of
  (``tests/zoo.py``).
- :func:`as_optax_factory`: an optax-style factory ``f(**kwargs)`` returning
  ``flr.as_optax(Twin(**kwargs))``, with the twin's own signature (which
  ``optax.inject_hyperparams`` and the optax tests inspect).
- The four modes the Flax NNX optimizer tests run in (:data:`MODES`,
  :func:`build_tx`, :func:`optimizer_cls`, :func:`model_and_optimizer_cls`).
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable
from typing import Any

import optax
from flax import nnx

import flr_nnx as flr
from flr_nnx import helpers

# optax factory name -> flr_nnx twin (tests/zoo.py holds the same pairs).
OPTAX_TWINS: dict[str, type[flr.optim.Optimizer]] = {
    "adabelief": flr.optim.AdaBelief,
    "adafactor": flr.optim.Adafactor,
    "adagrad": flr.optim.Adagrad,
    "adam": flr.optim.Adam,
    "adamax": flr.optim.Adamax,
    "adamw": flr.optim.AdamW,
    "amsgrad": flr.optim.AMSGrad,
    "lamb": flr.optim.LAMB,
    "lion": flr.optim.Lion,
    "muon": flr.optim.Muon,  # optax.contrib.muon
    "nadam": flr.optim.NAdam,
    "nadamw": flr.optim.NAdamW,
    "polyak_sgd": flr.optim.PolyakSGD,
    "radam": flr.optim.RAdam,
    "rmsprop": flr.optim.RMSProp,
    "sgd": flr.optim.SGD,
    "sign_sgd": flr.optim.SignSGD,
    # -- section C (issue 14)
    "yogi": flr.optim.Yogi,
    "adadelta": flr.optim.Adadelta,
    "adan": flr.optim.Adan,
    "adamaxw": flr.optim.AdamaxW,
    "signum": flr.optim.Signum,
    "rprop": flr.optim.Rprop,
    "optimistic_gradient_descent": flr.optim.OptimisticGradientDescent,
    "optimistic_adam_v2": flr.optim.OptimisticAdamV2,
    # -- end of section C
    # -- section D (issue 14)
    "lars": flr.optim.LARS,
    "fromage": flr.optim.Fromage,
    "novograd": flr.optim.NovoGrad,
    "sm3": flr.optim.SM3,
    "adopt": flr.optim.ADOPT,  # optax.contrib.adopt
    "ademamix": flr.optim.AdEMAMix,  # optax.contrib.ademamix
    "simplified_ademamix": flr.optim.SimplifiedAdEMAMix,  # optax.contrib.simplified_ademamix
    "madgrad": flr.optim.MADGRAD,  # optax.contrib.madgrad
    # -- end of section D
    # -- section E (issue 14)
    "acprop": flr.optim.AcProp,  # optax.contrib.acprop
    "dog": flr.optim.DoG,  # optax.contrib.dog
    "dowg": flr.optim.DoWG,  # optax.contrib.dowg
    "cocob": flr.optim.COCOB,  # optax.contrib.cocob
    "momo": flr.optim.Momo,  # optax.contrib.momo
    "momo_adam": flr.optim.MomoAdam,  # optax.contrib.momo_adam
    "dadapt_adamw": flr.optim.DAdaptAdamW,  # optax.contrib.dadapt_adamw
    "prodigy": flr.optim.Prodigy,  # optax.contrib.prodigy
    # -- end of section E
    # -- section F (issue 14)
    "noisy_sgd": flr.optim.NoisySGD,
    "reduce_on_plateau": flr.optim.ReduceOnPlateau,  # optax.contrib.reduce_on_plateau
    "sophia": flr.optim.Sophia,  # optax.contrib.sophia
    "optimistic_adam": flr.optim.OptimisticAdam,  # deprecated in optax: warns as optax
    # -- end of section F
    # -- section G (issue 14): wrappers, in WRAPPER_TWINS below
    # -- end of section G
    # -- section H (issue 14)
    "lbfgs": flr.optim.LBFGS,
    # -- end of section H
    # -- section I (issue 14)
    "schedule_free_sgd": flr.optim.ScheduleFreeSGD,  # optax.contrib.schedule_free_sgd
    "schedule_free_adamw": flr.optim.ScheduleFreeAdamW,  # optax.contrib.schedule_free_adamw
    # -- end of section I
    # -- section J (issue 14)
    "dpsgd": flr.optim.DPSGD,  # optax.contrib.dpsgd: per-example gradients
    # optax.contrib's gradient transformations (their optax_sign, as_optax's default: "gradient"):
    "differentially_private_aggregate": flr.optim.DifferentiallyPrivateAggregate,
    "normalize": flr.optim.Normalize,  # SAM's adversarial direction
    # -- end of section J
    # -- section K (issue 14)
    "galore": flr.optim.GaLore,  # optax.contrib.galore
    # -- end of section K
}

# -- section G (issue 14)
# optax wrapper name -> flr_nnx twin (flr.compose), for optax's wrappers of optimizers.
WRAPPER_TWINS: dict[str, type[flr.optim.Optimizer]] = {
    "mechanize": flr.compose.Mechanize,  # optax.contrib.mechanize
    "split_real_and_imaginary": flr.compose.SplitRealAndImaginary,  # optax.contrib
    "lookahead": flr.compose.Lookahead,  # optax.lookahead
    # -- section H (issue 14)
    # -- end of section H
    # -- section I (issue 14)
    "schedule_free": flr.compose.ScheduleFree,  # optax.contrib.schedule_free
    # -- end of section I
    # -- section J (issue 14)
    "sam": flr.compose.SAM,  # optax.contrib.sam: wraps an outer and an adversarial optimizer
    # -- end of section J
    # -- section K (issue 14)
    # -- end of section K
}
# -- end of section G


# -- section I (issue 14)
def schedule_free_eval_params(opt: Any, state: Any, params: Any) -> Any:
    """``optax.contrib.schedule_free_eval_params(state, params)`` for the transformation
    ``opt``: :func:`flr.eval_params` when ``opt`` is a twin (its state alone does not hold
    the hyperparameters), else optax's own function."""
    if isinstance(state, flr.HookState):
        return flr.eval_params(opt, state, params)
    return optax.contrib.schedule_free_eval_params(state, params)


# -- end of section I


def _signature(cls: type) -> inspect.Signature:
    """The twin's constructor signature, annotations resolved.

    flr's ``ScalarOrSchedule`` is the same union as optax's (a float, an array
    or a schedule), spelled as a ``|`` union; it is given as optax's alias so
    that optax's test "accepts a learning rate schedule if type annotated as
    such" recognises it instead of skipping.
    """
    sig = inspect.signature(cls, eval_str=True)
    params = []
    for p in sig.parameters.values():
        if p.annotation == helpers.ScalarOrSchedule:
            p = p.replace(annotation=optax.ScalarOrSchedule)
        elif p.annotation == helpers.ScalarOrSchedule | None:
            p = p.replace(annotation=optax.ScalarOrSchedule | None)
        params.append(p)
    return sig.replace(parameters=params, return_annotation=optax.GradientTransformationExtraArgs)


def as_optax_factory(cls: type[flr.optim.Optimizer]) -> Callable[..., Any]:
    """``f(*args, **kwargs) -> flr.as_optax(cls(*args, **kwargs))``, with ``cls``'s signature."""

    def factory(*args: Any, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
        hook = cls(*args, **kwargs)
        tx = flr.as_optax(hook)
        _HOOKS[id(tx)] = (tx, hook)
        return tx

    factory.__signature__ = _signature(cls)  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = f"as_optax_{cls.__name__}"
    factory.__doc__ = f"flr.as_optax(flr.optim.{cls.__name__}(...))"
    return factory


# The hook optimizer behind each transformation `as_optax_factory` made (the
# transformation is kept alive with it, so the id stays its own).
_HOOKS: dict[int, tuple[Any, Any]] = {}


def wrapper_factory(name: str) -> Callable[..., Any]:
    """optax's wrapper ``name`` (``f(base_opt, **kwargs)``) as its flr_nnx twin: the twin
    wraps the hook optimizer behind ``base_opt`` (made by :func:`as_optax_factory`)."""
    cls = WRAPPER_TWINS[name]

    def factory(base_opt: Any, *args: Any, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
        return flr.as_optax(cls(_HOOKS[id(base_opt)][1], *args, **kwargs))

    sig = _signature(cls)
    first, *rest = sig.parameters.values()
    factory.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[first.replace(name="base_opt"), *rest]
    )
    factory.__name__ = factory.__qualname__ = f"as_optax_{cls.__name__}"
    return factory


OPTAX_FACTORIES: dict[str, Callable[..., Any]] = {
    name: as_optax_factory(cls) for name, cls in OPTAX_TWINS.items()
}

# --------------------------------------------------------------------------
# Flax NNX optimizer tests: four ways to build the optimizer.

FLR_TWIN = "flr_twin"  # flr.NNXOptimizer(model, flr.optim.<Twin>(...))
OPTAX_TX = "optax_tx"  # flr.NNXOptimizer(model, optax.<factory>(...))
FROM_OPTAX = "from_optax"  # flr.NNXOptimizer(model, flr.from_optax(optax.<factory>(...)))
NNX_AS_OPTAX = "nnx_as_optax"  # nnx.Optimizer(model, flr.as_optax(flr.optim.<Twin>(...)))
MODES = (FLR_TWIN, OPTAX_TX, FROM_OPTAX, NNX_AS_OPTAX)

# optax optimizers the peers' tests use that have no flr twin yet -> the twin's
# future name. Move an entry to OPTAX_TWINS when its twin lands.
MISSING_TWINS: dict[str, str] = {}


def build_tx(test: Any, mode: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What the optimizer class of ``mode`` is given for ``factory(*args, **kwargs)``.

    ``factory`` is an optax factory (``optax.adam``); its twin is looked up by
    name in :data:`OPTAX_TWINS`. Modes that build the twin skip ``test`` when
    there is none, naming the missing twin.
    """
    if mode in (OPTAX_TX, FROM_OPTAX):
        tx = factory(*args, **kwargs)
        return tx if mode == OPTAX_TX else flr.from_optax(tx)
    name = factory.__name__
    if name in MISSING_TWINS:
        test.skipTest(
            f"no flr twin of optax.{name}: flr.optim.{MISSING_TWINS[name]} does not exist "
            f"yet, and mode {mode!r} builds the flr twin"
        )
    twin = OPTAX_TWINS[name]
    opt = twin(*args, **kwargs)
    return opt if mode == FLR_TWIN else flr.as_optax(opt)


def optimizer_cls(mode: str) -> type:
    """``nnx.Optimizer`` for the optax-bridge mode, else ``flr.NNXOptimizer``."""
    return nnx.Optimizer if mode == NNX_AS_OPTAX else flr.NNXOptimizer


class FlrModelAndOptimizer(flr.NNXOptimizer):
    """Flax's ``nnx.ModelAndOptimizer`` over :class:`flr.NNXOptimizer`.

    The same three lines as in flax 0.12.8 (``flax/nnx/training/optimizer.py``):
    keep the model, update it without passing it.
    """

    def __init__(self, model: Any, opt: Any, *, wrt: Any = nnx.Param):
        super().__init__(model, opt, wrt=wrt)
        self.model = model

    def update(self, grads: Any, /, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().update(self.model, grads, **kwargs)


def model_and_optimizer_cls(mode: str) -> type:
    """``nnx.ModelAndOptimizer`` for the optax-bridge mode, else :class:`FlrModelAndOptimizer`."""
    return nnx.ModelAndOptimizer if mode == NNX_AS_OPTAX else FlrModelAndOptimizer


def state_path(opt_state: Any, name: str, param: str) -> tuple[Any, ...]:
    """The path in ``opt_state`` of state ``name`` (e.g. ``'mu'``) of parameter ``param``.

    Replaces optax's tuple index (``opt_state[0]['mu']['kernel']``), which only
    optax's own chain state has: the one leaf whose path contains ``name`` and
    ends with ``param``; failing that (``flr.from_optax`` hands optax the
    parameters as a list, so its state is indexed by position), the one leaf
    whose path contains ``name``. Raises if there is not exactly one.
    """
    paths = [tuple(path) for path, _ in nnx.to_flat_state(opt_state)]
    under = [p for p in paths if name in p]
    named = [p for p in under if p[-1] == param]
    found = named or under
    if len(found) != 1:
        raise AssertionError(
            f"expected one state leaf under {name!r} for {param!r}, found {found} in {paths}"
        )
    return found[0]


def at(tree: Any, path: tuple[Any, ...]) -> Any:
    """``tree[path[0]][path[1]]...``."""
    return functools.reduce(operator.getitem, path, tree)


def with_twins(table: Any) -> Any:
    """The entries of one of optax's test tables whose optimizer has an flr_nnx twin
    (a list or a tuple, as the table was)."""
    return type(table)(entry for entry in table if entry["opt_name"] in OPTAX_TWINS)
