"""Every misuse flr_nnx detects, as data: drives tests/test_errors.py and the docs page.

Each error case is a function whose body is self-contained (it uses only ``jax``,
``jnp``, ``optax``, ``nnx`` and ``flr``) and whose LAST statement is the call that
raises. ``docs/what_happens_when.py`` renders the body as a runnable example, with
that last statement wrapped in ``try``/``except``, next to the message the call
really produces. Each behaviour case is a function whose body runs and asserts
what happens in a situation that is deliberately *not* an error.

To add a case: write the function here with ``@error_case(...)`` or ``@behaviour(...)``,
then run ``python docs/what_happens_when.py`` to regenerate the page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import flr_nnx as flr

__all__ = ["BEHAVIOURS", "CASES", "GROUPS", "Behaviour", "Case"]

# (title, introduction) of each group of cases, in page order.
GROUPS = {
    "hooks": (
        "A hook returns the wrong thing",
        "``call_model`` must return a dict from parameter key to gradient (a subset of the "
        "keys it got) and ``call_param`` an array shaped like the parameter, in its dtype.",
    ),
    "structure": (
        "Gradients do not match the parameters",
        "The parameters seen at ``init`` fix the structure; every step must pass "
        "gradients for exactly those parameters.",
    ),
    "state": (
        "Optimizer state misbehaves",
        "State is discovered by running the first step at ``init``; after that its "
        "structure, shapes and dtypes are fixed, so training compiles once.",
    ),
    "missing": (
        "An optimizer needs ``params`` or ``loss`` that were not passed",
        "The bridges pass a stand-in that raises as soon as a hook uses it.",
    ),
    "construction": (
        "An optimizer is constructed with bad arguments",
        "Built-in optimizers check their hyperparameters when constructed; every "
        "optimizer class reports bad arguments with its signature.",
    ),
    "bridges": (
        "A hook optimizer and an optax transformation are mixed up",
        "A hook optimizer runs through a bridge (:class:`~flr_nnx.NNXOptimizer` or "
        ":func:`~flr_nnx.as_optax`); an optax transformation is used directly. Each mix-up "
        "names the function to use, and so do calls in the style of an older Flax.",
    ),
    "complex": (
        "A complex parameter meets a step with no complex answer",
        "The built-ins treat complex parameters as optax does (:math:`|g|^2` via "
        "``flr.helpers.abs_sq``). Where optax raises for complex numbers or silently drops "
        "their imaginary part, they raise instead, naming the parameter.",
    ),
    "leaks": (
        "A hook stores a traced value outside the optimizer",
        "Only ``self`` (its attributes, dicts, lists and sub-optimizers) is optimizer "
        "state. A traced value stored anywhere else is caught while the step is traced.",
    ),
}


@dataclasses.dataclass(frozen=True)
class Case:
    """A misuse, the exception it raises, and a regex its message must match."""

    name: str
    group: str
    situation: str
    error: type[Exception]
    match: str
    also: tuple[type[Exception], ...]
    run: Callable[[], object]


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """A situation that is not an error, and asserts of what happens instead."""

    name: str
    situation: str
    run: Callable[[], object]


CASES: list[Case] = []
BEHAVIOURS: list[Behaviour] = []


def error_case(
    group: str,
    situation: str,
    error: type[Exception],
    match: str,
    also: tuple[type[Exception], ...] = (),
) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """Registers a misuse; ``also`` lists builtin exception types it must also be."""
    assert group in GROUPS, group

    def register(run: Callable[[], object]) -> Callable[[], object]:
        CASES.append(Case(run.__name__, group, situation, error, match, also, run))
        return run

    return register


def behaviour(situation: str) -> Callable[[Callable[[], object]], Callable[[], object]]:
    def register(run: Callable[[], object]) -> Callable[[], object]:
        BEHAVIOURS.append(Behaviour(run.__name__, situation, run))
        return run

    return register


# -- hooks -------------------------------------------------------------------------


@error_case(
    "hooks",
    "``call_param`` returns an update of the wrong shape",
    flr.HookError,
    r"WrongShape\.call_param for parameter \('w',\) returned array of shape \(\) .*"
    r"expected shape \(3,\) and dtype float32.*Fix:",
    also=(TypeError,),
)
def call_param_wrong_shape():
    class WrongShape(flr.optim.Optimizer):
        def call_param(self, grad, **_):
            return grad.sum()  # a scalar, not an update per entry

    flr.as_optax(WrongShape()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_param`` returns an update of the wrong dtype",
    flr.HookError,
    r"WrongDtype\.call_param for parameter \('w',\) returned array of shape \(3,\) and "
    r"dtype float16.*expected shape \(3,\) and dtype float32.*astype\(param\.dtype\)",
)
def call_param_wrong_dtype():
    class WrongDtype(flr.optim.Optimizer):
        def call_param(self, grad, **_):
            return grad.astype(jnp.float16)

    flr.as_optax(WrongDtype()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_param`` returns something that is not an array",
    flr.HookError,
    r"NotAnArray\.call_param for parameter \('w',\) returned float 0\.1; expected an "
    r"array of shape \(3,\) and dtype float32.*Fix:",
)
def call_param_not_an_array():
    class NotAnArray(flr.optim.Optimizer):
        def call_param(self, grad, **_):
            return 0.1

    flr.as_optax(NotAnArray()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_param`` returns ``None`` (a forgotten ``return``)",
    flr.HookError,
    r"ReturnsNone\.call_param for parameter \('w',\) returned None; expected an array "
    r"of shape \(3,\).*Fix:",
)
def call_param_returns_none():
    class ReturnsNone(flr.optim.Optimizer):
        def call_param(self, grad, **_):
            update = 0.1 * grad  # noqa: F841 -- and no `return`

    flr.as_optax(ReturnsNone()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_model`` adds a key that is not a parameter",
    flr.HookError,
    r"AddsKey\.call_model returned keys that are not parameters: \[\('extra',\)\]\. "
    r"Known keys look like \[\('w',\)\].*leave a key out to skip",
)
def call_model_adds_key():
    class AddsKey(flr.optim.Optimizer):
        def call_model(self, grads, **_):
            return {**grads, ("extra",): jnp.zeros(())}

    flr.as_optax(AddsKey()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_model`` returns something other than a dict",
    flr.HookError,
    r"ReturnsList\.call_model returned list .*expected a dict from parameter key to "
    r"gradient.*Fix:",
)
def call_model_not_a_mapping():
    class ReturnsList(flr.optim.Optimizer):
        def call_model(self, grads, **_):
            return list(grads.values())

    flr.as_optax(ReturnsList()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_model`` returns a dict whose values are not arrays",
    flr.HookError,
    r"ReturnsFloats\.call_model returned float 1\.0 for parameter \('w',\); expected an "
    r"array.*Fix:",
)
def call_model_non_array_value():
    class ReturnsFloats(flr.optim.Optimizer):
        def call_model(self, grads, **_):
            return {key: 1.0 for key in grads}

    flr.as_optax(ReturnsFloats()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_model`` changes a gradient's shape",
    flr.HookError,
    r"Flattens\.call_model returned array of shape \(6,\) .* for parameter \('w',\); "
    r"expected shape \(2, 3\).*Fix:",
)
def call_model_changes_shape():
    class Flattens(flr.optim.Optimizer):
        def call_model(self, grads, **_):
            return {key: grad.ravel() for key, grad in grads.items()}

    flr.as_optax(Flattens()).init({"w": jnp.ones((2, 3))})


@error_case(
    "hooks",
    "``__call__`` returns updates for keys that are not parameters",
    flr.HookError,
    r"ExtraUpdate\.__call__ returned updates for keys that are not parameters: "
    r"\[\('bias',\)\].*Fix:",
)
def call_returns_extra_key():
    class ExtraUpdate(flr.optim.Optimizer):
        def __call__(self, loss, grads, params):
            return {**grads, ("bias",): jnp.zeros(())}

    flr.as_optax(ExtraUpdate()).init({"w": jnp.ones(3)})


# -- structure -----------------------------------------------------------------------


@error_case(
    "structure",
    "the gradients have other keys than the parameters at ``init`` (optax)",
    flr.StructureError,
    r"Missing keys: \[\('b',\)\]; extra keys: \[\('c',\)\]\. Fix: pass gradients of the "
    r"same parameters",
    also=(ValueError,),
)
def grads_other_keys_optax():
    tx = flr.as_optax(flr.optim.Adam(1e-3))
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    state = tx.init(params)
    tx.update({"a": jnp.ones(2), "c": jnp.ones(3)}, state, params)


@error_case(
    "structure",
    "the gradients come from another model (NNX)",
    flr.StructureError,
    r"Missing keys: \[\]; extra keys: \[\('layers', 1, 'bias'\), \('layers', 1, 'kernel'\)\]",
)
def grads_other_model_nnx():
    small = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    large = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Linear(2, 1, rngs=nnx.Rngs(1)))
    optimizer = flr.NNXOptimizer(small, flr.optim.Adam(1e-3), wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(large, nnx.Param))
    optimizer.update(small, grads)


# -- state ---------------------------------------------------------------------------


@error_case(
    "state",
    "a hook creates new state after ``init``",
    flr.StateError,
    r"opt\.history\[\('w', 2\)\] was created after init \(also opt\.calls\[1\]\S*\)\. The "
    r"state structure is fixed by the first step.*Fix:",
)
def state_created_after_init():
    class Growing(flr.optim.Optimizer):
        def __init__(self):
            self.calls = []
            self.history = {}

        def call_param(self, key, grad, **_):
            self.calls.append(key)  # a Python list that grows at every trace
            self.history[(*key, len(self.calls))] = grad
            return grad

    tx = flr.as_optax(Growing())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    tx.update(params, state, params)


@error_case(
    "state",
    "an optimizer declares ``elementwise = True`` but creates state for some keys only",
    flr.StateError,
    r"opt\.first_seen\[\('b',\)\] was created after init.*Fix:.*Note: OnlyVectors declares "
    r"`elementwise = True`, so init discovered its state on one parameter per shape and dtype.*"
    r"remove `elementwise = True` from OnlyVectors",
)
def elementwise_with_key_dependent_state():
    class OnlyVectors(flr.optim.Optimizer):
        elementwise = True  # a promise that every parameter is treated alike

        def __init__(self):
            self.first_seen = {}

        def call_param(self, key, grad, **_):
            if key not in self.first_seen and key != ("a",):
                self.first_seen[key] = grad
            return grad

    tx = flr.as_optax(OnlyVectors())
    # 'a' and 'b' share a shape and dtype, so init only traces 'a', which has no state.
    params = {"a": jnp.ones(3), "b": jnp.ones(3), "c": jnp.ones(3)}
    state = tx.init(params)
    tx.update(params, state, params)


@error_case(
    "state",
    "a state dict mixes key types that cannot be sorted",
    flr.StateError,
    r"The optimizer's state has a dict at `slots` \(in the nested state\) whose keys mix int "
    r"and str.*JAX sorts dict keys.*Fix: use keys of one type",
)
def state_dict_keys_mix_types():
    class Slots(flr.optim.Optimizer):
        def __init__(self):
            self.slots = {0: jnp.zeros(()), "warmup": jnp.ones(())}

        def call_model(self, grads, **_):
            # Assigned by a hook, so state (an array the hooks only read is a constant).
            self.slots = {k: v + 1 for k, v in self.slots.items()}
            return grads

    flr.as_optax(Slots()).init({"w": jnp.ones(3)})


@error_case(
    "state",
    "a hook reads a ``transient`` attribute before assigning it in this step",
    flr.TransientReadError,
    r"Warmup\.lr_t was read before a hook assigned it in this step\. It is listed in "
    r"Warmup\.transient, so it is not kept between steps\. Fix: assign `self\.lr_t`",
    also=(AttributeError,),
)
def transient_read_before_assigned():
    class Warmup(flr.optim.Optimizer):
        transient = ("lr_t",)

        def __init__(self):
            self.count = jnp.zeros((), jnp.int32)

        def call_model(self, grads, **_):
            self.count = self.count + 1
            if hasattr(self, "lr_t"):  # never true: transient values start fresh each step
                self.lr_t = jnp.minimum(self.lr_t * 2, 0.1)
            return grads

        def call_param(self, grad, **_):
            return self.lr_t * grad

    flr.as_optax(Warmup()).init({"w": jnp.ones(3)})


@error_case(
    "state",
    "an attribute listed in ``transient`` is set in ``__init__``",
    flr.StateError,
    r"opt\.count is listed in Counter\.transient but already has a value before the first "
    r"step\..*Fix: compute it in a hook at every step, or remove it from `transient`",
)
def transient_set_in_init():
    class Counter(flr.optim.Optimizer):
        transient = ("count",)  # a mistake: the count must persist between steps

        def __init__(self):
            self.count = jnp.zeros((), jnp.int32)

        def call_model(self, grads, **_):
            self.count = self.count + 1
            return grads

    flr.as_optax(Counter()).init({"w": jnp.ones(3)})


@error_case(
    "state",
    "a hook changes the dtype of state on the first step",
    flr.StateError,
    r"opt\.count starts as array of shape \(\) and dtype int32 but the first step turns it "
    r"into array of shape \(\) and dtype float32.*Fix:",
)
def state_dtype_changes_at_init():
    class HalfSteps(flr.optim.Optimizer):
        def __init__(self):
            self.count = jnp.zeros((), jnp.int32)

        def call_model(self, grads, **_):
            self.count = self.count + 0.5  # int32 + float -> float32
            return grads

    flr.as_optax(HalfSteps()).init({"w": jnp.ones(3)})


@error_case(
    "state",
    "state changes dtype between steps",
    flr.StateError,
    r"opt\.last_loss changed from array of shape \(\) and dtype float32 to array of shape "
    r"\(\) and dtype bfloat16 during a step.*astype\(float32\)",
)
def state_dtype_changes_between_steps():
    class KeepsLoss(flr.optim.Optimizer):
        def call_model(self, grads, loss, **_):
            self.last_loss = loss  # float32 at init, whatever the caller passes later
            return grads

    tx = flr.as_optax(KeepsLoss())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    tx.update(params, state, params, value=jnp.ones((), jnp.bfloat16))


@error_case(
    "state",
    "state changes shape between steps",
    flr.StateError,
    r"opt\.last_loss changed from array of shape \(\) and dtype float32 to array of shape "
    r"\(4,\) and dtype float32 during a step; state must keep its shape and dtype",
)
def state_shape_changes_between_steps():
    class KeepsLoss(flr.optim.Optimizer):
        def call_model(self, grads, loss, **_):
            self.last_loss = loss
            return grads

    tx = flr.as_optax(KeepsLoss())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    tx.update(params, state, params, value=jnp.ones(4))  # per-example losses


@error_case(
    "state",
    "a hook deletes state",
    flr.StateError,
    r"opt\.m\[\('w',\)\] was optimizer state at init but is gone after this step.*Fix:",
)
def state_deleted():
    class Forgetful(flr.optim.Optimizer):
        def __init__(self):
            self.m = {}

        def call_param(self, key, grad, **_):
            if key in self.m:
                del self.m[key]  # present at init, deleted at the next step
                return grad
            self.m[key] = grad
            return grad

    tx = flr.as_optax(Forgetful())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    tx.update(params, state, params)


@error_case(
    "state",
    "a hook changes a Python number (a compile-time constant)",
    flr.StateError,
    r"opt\.steps is a Python value \(a compile-time constant\), but a hook changed it from "
    r"0 to 1 during init.*Fix: store it as a JAX array",
)
def python_counter_changes():
    class PythonCounter(flr.optim.Optimizer):
        def __init__(self):
            self.steps = 0

        def call_model(self, grads, **_):
            self.steps += 1  # runs only while tracing: would stay 1 forever
            return grads

    flr.as_optax(PythonCounter()).init({"w": jnp.ones(3)})


# -- missing arguments ----------------------------------------------------------------


@error_case(
    "missing",
    "``as_optax``: a hook reads ``param`` but ``update`` got no ``params``",
    flr.MissingArgumentError,
    r"This optimizer reads `params`, but it was not provided to this step\. Fix: pass the "
    r"parameters: `tx\.update\(grads, state, params\)`",
    also=(TypeError,),
)
def params_not_passed():
    class WeightDecay(flr.optim.Optimizer):
        def call_param(self, grad, param, **_):
            return grad + 1e-4 * param

    tx = flr.as_optax(WeightDecay())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    tx.update(params, state)  # optax allows params=None


@error_case(
    "missing",
    "``as_optax``: a hook reads ``loss`` but ``update`` got no ``value=``",
    flr.MissingArgumentError,
    r"This optimizer reads `loss`, but it was not provided to this step\. Fix: pass the loss "
    r"as optax's `value=` extra argument",
)
def loss_not_passed_optax():
    class LossScaled(flr.optim.Optimizer):
        def call_model(self, grads, loss, **_):
            return {key: grad / (1 + loss) for key, grad in grads.items()}

    tx = flr.as_optax(LossScaled())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    tx.update(params, state, params)


@error_case(
    "missing",
    "``NNXOptimizer``: a hook reads ``loss`` but ``update`` got no ``loss=``",
    flr.MissingArgumentError,
    r"This optimizer reads `loss`, but it was not provided to this step\. Fix: pass it to "
    r"the update: `optimizer\.update\(model, grads, loss=loss\)`",
)
def loss_not_passed_nnx():
    class LossScaled(flr.optim.Optimizer):
        def call_model(self, grads, loss, **_):
            return {key: grad / (1 + loss) for key, grad in grads.items()}

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, LossScaled(), wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)


# -- construction ----------------------------------------------------------------------


@error_case(
    "construction",
    "a negative learning rate",
    flr.HyperparameterError,
    r"Adam\(learning_rate=-0\.001\): expected learning_rate in >= 0\.0, got -0\.001\. Fix:",
    also=(ValueError,),
)
def negative_learning_rate():
    flr.optim.Adam(-1e-3)


@error_case(
    "construction",
    "a beta outside [0, 1)",
    flr.HyperparameterError,
    r"Adam\(b1=1\.0\): expected b1 in \[0\.0, 1\.0\), got 1\.0\. Fix:",
)
def beta_out_of_range():
    flr.optim.Adam(1e-3, b1=1.0)


@error_case(
    "construction",
    "a negative beta",
    flr.HyperparameterError,
    r"Adam\(b2=-0\.5\): expected b2 in \[0\.0, 1\.0\), got -0\.5\. Fix:",
)
def beta_negative():
    flr.optim.Adam(1e-3, b2=-0.5)


@error_case(
    "construction",
    "a negative epsilon",
    flr.HyperparameterError,
    r"Adam\(eps=-1e-08\): expected eps in >= 0\.0, got -1e-08\. Fix:",
)
def negative_eps():
    flr.optim.Adam(1e-3, eps=-1e-8)


@error_case(
    "construction",
    "an unknown keyword argument (a misspelt hyperparameter)",
    flr.ArgumentError,
    r"Adam\(learning_rate, b1=0\.9, b2=0\.999, .*\): unknown keyword argument beta1\. "
    r"Did you mean `b1`\? Fix: call it as that signature says",
    also=(TypeError, ValueError),
)
def unknown_keyword():
    flr.optim.Adam(1e-3, beta1=0.8)


@error_case(
    "construction",
    "another library's name for a hyperparameter, on your own optimizer",
    flr.ArgumentError,
    r"MySGD\(η=0\.01, momentum=0\.0\): unknown keyword argument lr\. Did you mean `η`\?",
    also=(TypeError,),
)
def unknown_keyword_user_class():
    class MySGD(flr.optim.Optimizer):
        def __init__(self, η=0.01, momentum=0.0):
            self.η, self.momentum = η, momentum

    MySGD(lr=0.1)


@error_case(
    "construction",
    "a required argument is missing",
    flr.ArgumentError,
    r"Adam\(learning_rate, .*\): missing a required argument: 'learning_rate'\. Fix:",
)
def missing_required_argument():
    flr.optim.Adam()


@error_case(
    "construction",
    "arguments to an optimizer that takes none",
    flr.ArgumentError,
    r"Identity -> Optimizer\(\): unknown keyword argument lr\. Fix: call it as that "
    r"signature says \(accepted arguments: none\)",
)
def arguments_without_init():
    class Identity(flr.optim.Optimizer):
        def call_param(self, grad, **_):
            return grad

    Identity(lr=0.1)


# -- tracer leaks ---------------------------------------------------------------------


@error_case(
    "leaks",
    "a hook appends to a global list",
    flr.TracerLeakError,
    # On the docs page LOG is a global; run as a test function, a closure variable.
    r"A hook of Logged stored a traced float32\[3\] in `LOG\[0\]` \(a (global used by|"
    r"closure variable of) Logged\.call_param\) during init\..*UnexpectedTracerError\. "
    r"Fix:.*jax\.debug\.print",
    also=(RuntimeError,),
)
def tracer_leak_global():
    LOG = []

    class Logged(flr.optim.Optimizer):
        def call_param(self, grad, **_):
            LOG.append(grad)
            return grad

    flr.as_optax(Logged()).init({"w": jnp.ones(3)})


@error_case(
    "leaks",
    "a hook writes into an object the engine does not copy",
    flr.TracerLeakError,
    r"A hook of Tracked stored a traced float32\[3\] in `opt\.stats\.last` \(an object the "
    r"engine does not copy\) during init",
)
def tracer_leak_object():
    class Stats:  # a plain object: configuration to the engine, not state
        last = None

    class Tracked(flr.optim.Optimizer):
        def __init__(self):
            self.stats = Stats()

        def call_param(self, grad, **_):
            self.stats.last = grad
            return grad

    flr.as_optax(Tracked()).init({"w": jnp.ones(3)})


@error_case(
    "leaks",
    "a hook stores into a class attribute",
    flr.TracerLeakError,
    r"stored a traced float32\[3\] in `Cached\.cache\[\('w',\)\]` \(a class attribute\)",
)
def tracer_leak_class_attribute():
    class Cached(flr.optim.Optimizer):
        cache = {}  # noqa: RUF012 -- shared by all instances, not copied per step

        def call_param(self, key, grad, **_):
            type(self).cache[key] = grad
            return grad

    flr.as_optax(Cached()).init({"w": jnp.ones(3)})


# -- bridges ---------------------------------------------------------------------------


@error_case(
    "bridges",
    "a hook optimizer is given to ``nnx.Optimizer``",
    flr.BridgeError,
    r"Adam\.init\(\) was called as if Adam were an optax transformation .*Fix: wrap it: "
    r"flr\.as_optax\(opt\), or use flr\.NNXOptimizer",
    also=(TypeError,),
)
def hook_optimizer_in_nnx_optimizer():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    nnx.Optimizer(model, flr.optim.Adam(1e-3), wrt=nnx.Param)


@error_case(
    "bridges",
    "a hook optimizer is put in ``optax.chain`` (or ``optax.MultiSteps``)",
    flr.BridgeError,
    r"Adam\.init\(\) was called as if Adam were an optax transformation .*Fix: wrap it: "
    r"flr\.as_optax\(opt\)",
)
def hook_optimizer_in_optax_chain():
    tx = optax.chain(optax.clip_by_global_norm(1.0), flr.optim.Adam(1e-3))
    tx.init({"w": jnp.ones(3)})


@error_case(
    "bridges",
    "an optax transformation is given to ``as_optax``",
    flr.BridgeError,
    r"flr\.as_optax got an optax GradientTransformationExtraArgs, which is already an optax "
    r"transformation.*Fix: use it directly .*or flr\.from_optax\(tx\) to put it in a hook Chain",
)
def optax_in_as_optax():
    flr.as_optax(optax.adam(1e-3))


@error_case(
    "bridges",
    "``assert_matches`` gets the optax transformation first and the hook optimizer second",
    flr.BridgeError,
    r"got an optax GradientTransformationExtraArgs as `opt` and the hook optimizer Adam as "
    r"`tx`: the arguments are swapped\. Fix: pass the hook optimizer under test first",
)
def assert_matches_swapped():
    params = {"w": jnp.ones(3)}
    flr.testing.assert_matches(optax.adam(1e-3), flr.optim.Adam(1e-3), params)


@error_case(
    "bridges",
    "``NNXOptimizer`` without ``wrt`` (required, as by ``nnx.Optimizer``)",
    flr.ArgumentError,
    r"NNXOptimizer\(model, Adam\(\.\.\.\)\): missing the keyword argument `wrt`.*"
    r"Fix: pass wrt=nnx\.Param",
    also=(TypeError,),
)
def nnx_optimizer_without_wrt():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    flr.NNXOptimizer(model, flr.optim.Adam(1e-3))


@error_case(
    "bridges",
    "``update(grads)`` without the model, as before Flax 0.11",
    flr.ArgumentError,
    r"NNXOptimizer\.update got only one positional argument.*Fix: call "
    r"`optimizer\.update\(model, grads\)`",
    also=(TypeError,),
)
def update_without_model():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(1e-3), wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(grads)


# -- behaviours: deliberately not errors ----------------------------------------------


@behaviour("``call_model`` leaves a key out: that parameter gets no update this step")
def dropped_key_gets_no_update():
    class FreezeBias(flr.optim.Optimizer):
        def __init__(self):
            self.m = {}

        def call_model(self, grads, **_):
            return {key: grad for key, grad in grads.items() if key != ("bias",)}

        def call_param(self, key, grad, **_):
            if key not in self.m:
                self.m[key] = jnp.zeros_like(grad)
            self.m[key] = 0.9 * self.m[key] + grad
            return 0.1 * self.m[key]

    tx = flr.as_optax(FreezeBias())
    params = {"kernel": jnp.ones(3), "bias": jnp.ones(2)}
    state = tx.init(params)
    updates, state = tx.update({"kernel": jnp.ones(3), "bias": jnp.ones(2)}, state, params)
    assert (updates["bias"] == 0).all() and (updates["kernel"] != 0).all()
    assert "bias" not in state.tree["m"]  # its call_param never ran, so it has no state


@behaviour("``as_optax`` gets integer, boolean or ``float0`` leaves: they are left alone")
def non_float_leaves_left_alone():
    tx = flr.as_optax(flr.optim.Adam(0.1))
    params = {"w": jnp.ones(2), "step": jnp.array([3, 4]), "mask": jnp.array([True, False])}
    state = tx.init(params)
    assert set(state.tree["mu"]) == {"w"}  # state only for float leaves
    grads = {"w": jnp.ones(2), "step": jnp.array([7, 7]), "mask": jnp.array([True, True])}
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert (new["step"] == params["step"]).all() and (new["mask"] == params["mask"]).all()
    assert new["step"].dtype == jnp.int32 and (new["w"] < params["w"]).all()
    # float0 gradients (from `jax.grad(..., allow_int=True)`) pass through as they are.
    grads = jax.grad(lambda p: (p["w"] ** 2).sum(), allow_int=True)(params)
    updates, state = tx.update(grads, state, params)
    assert updates["step"].dtype == jax.dtypes.float0


# -- complex parameters --------------------------------------------------------------


@error_case(
    "complex",
    "``Clip`` on a complex parameter (``optax.clip`` raises too: no order to clip by)",
    flr.ComplexParameterError,
    r"Clip: parameter \('z',\) is complex64, but complex numbers have no order.*Fix:",
    also=(ValueError,),
)
def clip_complex():
    tx = flr.as_optax(flr.optim.Clip(1.0))
    tx.init({"z": jnp.ones(3, jnp.complex64)})


@error_case(
    "complex",
    "a real ``mu_dtype`` for a complex parameter (optax keeps only the real part)",
    flr.ComplexParameterError,
    r"Adam\(mu_dtype=bfloat16\): parameter \('z',\) is complex64.*drop the imaginary.*Fix:",
    also=(ValueError,),
)
def real_moment_of_complex_parameter():
    params = {"z": jnp.ones(3, jnp.complex64)}
    tx = flr.as_optax(flr.optim.Adam(1e-3, mu_dtype=jnp.bfloat16))
    state = tx.init(params)  # as optax's init, it accepts this: the state is bfloat16
    tx.update(params, state, params)


# -- hooks that cannot go silently wrong ------------------------------------------------


@error_case(
    "hooks",
    "a hook's signature cannot take the keyword arguments (no ``**_``)",
    flr.HookError,
    r"NoRest\.call_param\(key, grad\) cannot be called as the engine calls it, with the "
    r"keyword arguments key=, grad=, param=.*Fix:.*\*\*_",
)
def hook_signature_without_rest():
    class NoRest(flr.optim.Optimizer):
        def call_param(self, key, grad):
            return grad

    flr.as_optax(NoRest()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "a hook renames its arguments",
    flr.HookError,
    r"Renamed\.call_param\(k, g, \*\*_\) cannot be called.*missing a required argument: "
    r"'k'.*Fix:",
)
def hook_signature_renamed():
    class Renamed(flr.optim.Optimizer):
        def call_param(self, k, g, **_):
            return g

    flr.as_optax(Renamed()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``__call__`` overridden without ``params``",
    flr.HookError,
    r"Whole\.__call__\(loss, grads\) cannot be called.*loss=, grads=, params=.*Fix:",
)
def call_signature_wrong():
    class Whole(flr.optim.Optimizer):
        def __call__(self, loss, grads):
            return grads

    flr.as_optax(Whole()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "Python control flow on a traced value (``if loss > 1``) in a hook",
    flr.HookError,
    r"A hook of Branches needed the value of a traced array in Python.*Hooks are traced.*"
    r"jnp\.where\(cond, a, b\).*jax\.lax\.cond",
)
def traced_value_in_python_if():
    class Branches(flr.optim.Optimizer):
        def call_model(self, grads, loss, **_):
            if loss > 1.0:
                return {k: g / 2 for k, g in grads.items()}
            return grads

    flr.as_optax(Branches()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``float(loss)`` in a hook",
    flr.HookError,
    r"A hook of Logs needed the value of a traced array in Python.*float\(loss\)",
)
def float_of_traced_loss():
    class Logs(flr.optim.Optimizer):
        def call_model(self, grads, loss, **_):
            self.last = float(loss)
            return grads

    flr.as_optax(Logs()).init({"w": jnp.ones(3)})


@error_case(
    "hooks",
    "``call_model`` returns gradients of another dtype",
    flr.HookError,
    r"Casts\.call_model returned array of shape \(3,\) and dtype bfloat16 for parameter "
    r"\('w',\); expected shape \(3,\) and dtype float32",
)
def call_model_changes_dtype():
    class Casts(flr.optim.Optimizer):
        def call_model(self, grads, **_):
            return {k: g.astype(jnp.bfloat16) for k, g in grads.items()}

    flr.as_optax(Casts()).init({"w": jnp.ones(3)})


@error_case(
    "construction",
    "a hyperparameter set to ``None`` after construction",
    flr.HyperparameterError,
    r"A hook of SGD computed with None.*These hyperparameters are None: `opt\.learning_rate`.*Fix:",
)
def hyperparameter_set_to_none():
    opt = flr.optim.SGD(0.1)
    opt.learning_rate = None
    flr.as_optax(opt).init({"w": jnp.ones(3)})


@error_case(
    "bridges",
    "``flr.as_optax`` given the optimizer class instead of an instance",
    flr.BridgeError,
    r"flr\.as_optax got the class Adam itself; expected a hook optimizer, an instance of "
    r"it\. Fix: construct one.*`Adam\(\.\.\.\)`",
    also=(TypeError,),
)
def optimizer_class_to_as_optax():
    flr.as_optax(flr.optim.Adam)


@error_case(
    "structure",
    "an optax state passed to an flr ``update``",
    flr.StructureError,
    r"update got tuple \(ScaleByAdamState.* as its state; expected the HookState.*Fix:",
)
def optax_state_to_flr_update():
    params = {"w": jnp.ones(3)}
    tx = flr.as_optax(flr.optim.Adam(0.1))
    tx.update(params, optax.adam(0.1).init(params), params)


@error_case(
    "structure",
    "``update``'s ``params`` lack a parameter of the gradients",
    flr.StructureError,
    r"update got gradients for parameters \[\('b',\)\] that are not in `params`.*Fix:",
)
def params_missing_a_gradient_key():
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    tx = flr.as_optax(flr.optim.Adam(0.1))
    tx.update(params, tx.init(params), {"w": params["w"]})


@error_case(
    "structure",
    "a parameter replaced by one of another shape after ``init``",
    flr.StructureError,
    r"Parameter \('w',\) had shape \(3,\) when the optimizer state was initialised; its "
    r"gradient now has shape \(4,\).*Fix: initialise a new optimizer state",
)
def parameter_shape_changed():
    tx = flr.as_optax(flr.optim.Adam(0.1))
    state = tx.init({"w": jnp.ones(3)})
    params = {"w": jnp.ones(4)}
    tx.update(params, state, params)


@error_case(
    "structure",
    "float32 gradients for bfloat16 parameters",
    flr.StructureError,
    r"The gradient of parameter \('w',\) is float32 but the parameter is bfloat16\. optax "
    r"accepts that.*Fix: cast the gradients.*MixedPrecision",
)
def float32_grads_for_bfloat16_params():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = flr.as_optax(flr.optim.Adam(0.1))
    tx.update({"w": jnp.ones(3, jnp.float32)}, tx.init(params), params)


@error_case(
    "state",
    "a hook changes an attribute of a plain Python object (``self.cfg.lr *= 0.5``)",
    flr.StateError,
    r"A hook of Decays changed `opt\.cfg` during init.*it has been put back\. Fix:.*"
    r"jnp\.asarray",
)
def hook_mutates_plain_object():
    import types

    class Decays(flr.optim.Optimizer):
        def __init__(self):
            self.cfg = types.SimpleNamespace(lr=1.0)

        def call_param(self, key, grad, **_):
            self.cfg.lr *= 0.5
            return self.cfg.lr * grad

    flr.as_optax(Decays()).init({"w": jnp.ones(3)})


@error_case(
    "state",
    "a hook changes a class attribute (``type(self).calls += 1``)",
    flr.StateError,
    r"A hook of Counts changed `Counts\.calls` during init.*put back",
)
def hook_mutates_class_attribute():
    class Counts(flr.optim.Optimizer):
        calls = 0

        def call_param(self, key, grad, **_):
            type(self).calls += 1
            return grad

    flr.as_optax(Counts()).init({"w": jnp.ones(3)})


@error_case(
    "state",
    "a hook adds to a ``set`` attribute",
    flr.StateError,
    r"A hook of Remembers changed `opt\.seen` during init.*put back",
)
def hook_mutates_set():
    class Remembers(flr.optim.Optimizer):
        def __init__(self):
            self.seen = set()

        def call_param(self, key, grad, **_):
            self.seen.add(key)
            return grad

    flr.as_optax(Remembers()).init({"w": jnp.ones(3)})


@error_case(
    "construction",
    "a live learning rate set to a value its constructor refuses",
    flr.HyperparameterError,
    r"Hyperparameter 'learning_rate': Adam\(learning_rate=-0\.1\): expected learning_rate "
    r"in >= 0\.0",
)
def live_hyperparameter_set_negative():
    tx = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
    flr.set_hyper(tx.init({"w": jnp.ones(3)}), "learning_rate", -0.1)


@error_case(
    "construction",
    "``set_hyper`` on state the hooks update (``count``)",
    flr.HyperparameterError,
    r"'count' is optimizer state that the hooks update at every step.*not a live "
    r"hyperparameter.*Fix:",
)
def set_hyper_on_state():
    tx = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
    flr.set_hyper(tx.init({"w": jnp.ones(3)}), "count", 5)


@error_case(
    "construction",
    "a fraction assigned to integer state (``optimizer.opt.count = 5.7``)",
    flr.HyperparameterError,
    r"opt\.count is integer state \(int32\); got float 5\.7, which it would truncate to 5",
)
def fraction_to_integer_state():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(0.1), wrt=nnx.Param)
    optimizer.opt.count = 5.7
