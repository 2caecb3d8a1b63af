"""Benchmarks flr_nnx against optax and ``nnx.Optimizer``, side by side.

One command (from the repository root)::

    python benchmarks/run.py            # full run (< ~5 min on 2 CPU cores)
    python benchmarks/run.py --smoke    # every code path with tiny sizes (seconds)

The full run writes ``docs/benchmarks.md`` (Markdown tables) and
``docs/_static/benchmarks.png`` (plot); ``--out DIR`` writes both under ``DIR``
instead. Every timing is a median over interleaved repetitions (the
implementations take turns, in rotating order, so machine noise hits them
alike) and is reported with its spread (min-max of the repetitions, relative
to the median) and as a ratio against optax measured in the same run.

What is measured:

- compiled update-step time (``jax.jit``, donated parameters and state) of
  ``flr.as_optax(flr.optim.Adam)`` and ``flr.compose.Packed`` against
  ``optax.adam``, on one leaf of 1M / 16M / 64M parameters and on 1000 leaves
  of 4096; the achieved bandwidth at the minimum 28 bytes per parameter
  against this machine's measured in-place ceiling; XLA's
  ``cost_analysis()`` bytes per parameter and ``memory_analysis()`` temp and
  alias bytes, and whether every donated buffer was consumed;
- an NNX transformer-like model (~20M parameters, ~100 leaves):
  ``flr.NNXOptimizer`` against ``nnx.Optimizer(model, optax.adam)``, both in
  ``nnx.jit``, plus the training-loop fast paths (tree mode and split/merge
  outside the loop) against a raw ``jax.jit`` optax step; and the same on a
  tiny model, where the per-call overhead dominates;
- trace + compile time at 10 / 100 / 1000 / 3000 leaves;
- init time (the lazy-state discovery) against ``optax.adam().init``;
- one optimizer per family (first-order, second-order, line search,
  schedule-free, wrapper) against its optax twin: a whole training step
  (``benchmarks/families.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import flr_nnx as flr

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from families import family_steps  # a module beside this script

ROOT = pathlib.Path(__file__).resolve().parents[1]
LR = 1e-3
MIN_BYTES_PER_PARAM = 28  # Adam: read param, grad, m, v; write param, m, v (float32)


@dataclasses.dataclass(frozen=True)
class Config:
    """Problem sizes and repetition counts of one run."""

    single: tuple[int, ...]  # one-leaf sizes
    many: tuple[int, int]  # (leaves, size of each)
    model: dict[str, int]  # transformer-like model dimensions
    tiny_model: dict[str, int]
    compile_leaves: tuple[int, ...]
    compile_once_from: int  # leaf counts from here on are compiled once per implementation
    compile_cap_s: float  # skip a compile timing expected to take longer than this
    init_leaves: int
    compile_size: int  # parameters per leaf in the compile and init timings
    ceiling_size: int
    reps: int  # interleaved repetitions of each timing
    target_s: float  # wall time of one timed repetition
    init_reps: int
    family: tuple[int, int, int]  # (width, depth, batch) of the per-family training step


FULL = Config(
    single=(1 << 20, 1 << 24, 1 << 26),
    many=(1000, 4096),
    model=dict(vocab=16384, d=384, layers=8, mlp=4),
    tiny_model=dict(vocab=32, d=8, layers=8, mlp=2),
    compile_leaves=(10, 100, 1000, 3000),
    compile_once_from=1000,  # 1000 leaves: the step benchmark's compile is the sample
    compile_cap_s=90.0,
    init_leaves=1000,
    compile_size=4096,
    ceiling_size=1 << 26,
    reps=9,
    target_s=0.15,
    init_reps=3,
    family=(256, 8, 16),
)

SMOKE = Config(
    single=(),
    many=(3, 16),
    model=dict(vocab=8, d=4, layers=1, mlp=2),
    tiny_model={},  # same code path as the model: skipped
    compile_leaves=(2, 3),
    compile_once_from=2,
    compile_cap_s=45.0,
    init_leaves=6,
    compile_size=16,
    ceiling_size=1 << 12,
    reps=2,
    target_s=0.002,
    init_reps=1,
    family=(4, 2, 3),
)


# --------------------------------------------------------------------------
# Timing helpers.


@dataclasses.dataclass
class Stat:
    """A median and its spread over repetitions (seconds)."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median over the repetitions."""
        return (max(self.samples) - min(self.samples)) / self.median

    def ratio(self, other: Stat) -> float:
        return self.median / other.median

    def min_ratio(self, other: Stat) -> float:
        """Ratio of the fastest repetitions: robust when other jobs share the machine."""
        return min(self.samples) / min(other.samples)


def interleaved(runners: dict[str, Callable[[int], None]], cfg: Config) -> dict[str, Stat]:
    """Times ``runner(k)`` (k steps, blocking at the end) for each runner, taking turns.

    The number of steps per repetition is chosen from one calibration call so
    that a repetition lasts about ``cfg.target_s``; the order of the runners
    rotates every repetition.
    """
    names = list(runners)
    steps: dict[str, int] = {}
    for name in names:
        runners[name](1)  # warm up (compiled already; first call allocates)
        start = time.perf_counter()
        runners[name](1)
        one = max(time.perf_counter() - start, 1e-6)
        steps[name] = max(1, min(1000, round(cfg.target_s / one)))
    k = min(steps.values())  # the same number of steps for everyone
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(cfg.reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name](k)
            samples[name].append((time.perf_counter() - start) / k)
    return {name: Stat(s) for name, s in samples.items()}


# --------------------------------------------------------------------------
# The optax-bridge step: jax.jit, donated parameters and state.


def transformations() -> dict[str, optax.GradientTransformation]:
    return {
        "optax.adam": optax.adam(LR),
        "flr as_optax(Adam)": flr.as_optax(flr.optim.Adam(LR)),
        "flr as_optax(Packed(Adam))": flr.as_optax(flr.compose.Packed(flr.optim.Adam(LR))),
    }


def leaves(n: int, size: int, seed: int = 0) -> dict[str, jax.Array]:
    key = jax.random.key(seed)
    return {f"p{i:04d}": jax.random.normal(jax.random.fold_in(key, i), (size,)) for i in range(n)}


@dataclasses.dataclass
class Built:
    """A compiled, donated update step and what XLA says about it."""

    compiled: Any
    trace_s: float
    lower_s: float
    compile_s: float
    bytes_per_param: float
    temp_bytes: int
    alias_bytes: int
    donated_bytes: int
    kernels: int

    @property
    def trace_compile_s(self) -> float:
        return self.trace_s + self.lower_s + self.compile_s


def build(tx: optax.GradientTransformation, params: Any, grads: Any) -> tuple[Built, Any]:
    """Compiles ``params, state <- step(params, state, grads)`` with donation."""
    state = tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    traced = jitted.trace(params, state, grads)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    n = sum(x.size for x in jax.tree.leaves(params))
    cost = compiled.cost_analysis() or {}
    memory = compiled.memory_analysis()
    donated = sum(x.nbytes for x in jax.tree.leaves((params, state)))
    built = Built(
        compiled=compiled,
        trace_s=t1 - t0,
        lower_s=t2 - t1,
        compile_s=t3 - t2,
        bytes_per_param=float(cost.get("bytes accessed", float("nan"))) / n,
        temp_bytes=int(getattr(memory, "temp_size_in_bytes", -1)),
        alias_bytes=int(getattr(memory, "alias_size_in_bytes", -1)),
        donated_bytes=donated,
        kernels=kernel_count(compiled.as_text()),
    )
    return built, state


# Instructions of the entry computation that move no data or only name buffers.
_NOT_KERNELS = {"parameter", "tuple", "get-tuple-element", "constant", "bitcast"}


def kernel_count(hlo: str) -> int:
    """Instructions of the optimized entry computation that run as kernels.

    On XLA:CPU each costs a few microseconds per step whatever its size, so
    two programs with the same count and bytes per parameter do the same work.
    """
    entry = hlo[hlo.index("ENTRY") :]
    body = entry[: entry.index("\n}")]
    ops = re.findall(r"=\s*\S+\s+([\w-]+)\(", body)
    return sum(op not in _NOT_KERNELS for op in ops)


def not_consumed(tree: Any) -> list[int]:
    """Sizes in bytes of the arrays of ``tree`` that a donating call did not consume.

    XLA drops inputs the computation never reads (such as state that is written
    every step but not read), so those stay alive although donated.
    """
    return [x.nbytes for x in jax.tree.leaves(tree) if not x.is_deleted()]


def fmt_donation(left: list[int]) -> str:
    if not left:
        return "all"
    return f"all but {len(left)} unread ({sum(left)} B)"


def bench_optax_case(label: str, params: dict[str, jax.Array], cfg: Config) -> dict[str, Any]:
    """Times every optax-bridge implementation on one parameter tree."""
    grads = jax.tree.map(lambda x: 1e-2 * x, params)
    n = sum(x.size for x in params.values())
    built, live, donation = {}, {}, {}
    for name, tx in transformations().items():
        p = jax.tree.map(jnp.copy, params)
        b, s = build(tx, p, grads)
        p2, s2 = b.compiled(p, s, grads)
        donation[name] = not_consumed((p, s))
        built[name], live[name] = b, [p2, s2]

    def runner(name: str) -> Callable[[int], None]:
        def run(k: int) -> None:
            p, s = live[name]
            for _ in range(k):
                p, s = built[name].compiled(p, s, grads)
            jax.block_until_ready((p, s))
            live[name] = [p, s]

        return run

    stats = interleaved({name: runner(name) for name in built}, cfg)
    for name in built:
        del live[name]
    return {"label": label, "n": n, "stats": stats, "built": built, "donation": donation}


def bandwidth_ceiling(cfg: Config) -> Stat:
    """Seconds per in-place ``x * a + b`` over ``cfg.ceiling_size`` float32 (8 B/elem)."""
    x = {"x": jnp.ones((cfg.ceiling_size,), jnp.float32)}
    f = jax.jit(lambda x: {"x": x["x"] * 0.999 + 0.001}, donate_argnums=0)
    live = [f(x)]

    def run(k: int) -> None:
        y = live[0]
        for _ in range(k):
            y = f(y)
        jax.block_until_ready(y)
        live[0] = y

    return interleaved({"ceiling": run}, cfg)["ceiling"]


# --------------------------------------------------------------------------
# NNX: a transformer-like model.


class Layers(nnx.Module):
    """``n`` dense layers of width ``d``: ``2 n`` leaves (the construction benchmark)."""

    def __init__(self, n: int, d: int, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(d, d, rngs=rngs) for _ in range(n)])


class Block(nnx.Module):
    def __init__(self, d: int, mlp: int, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(d, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
        self.out = nnx.Linear(d, d, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, mlp * d, rngs=rngs)
        self.down = nnx.Linear(mlp * d, d, rngs=rngs)


class Transformer(nnx.Module):
    """Parameters shaped like a small decoder (the optimizer never runs it forward)."""

    def __init__(self, vocab: int, d: int, layers: int, mlp: int, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.blocks = nnx.List([Block(d, mlp, rngs) for _ in range(layers)])
        self.ln = nnx.LayerNorm(d, rngs=rngs)


def make_model(dims: dict[str, int]) -> Transformer:
    return Transformer(**dims, rngs=nnx.Rngs(0))


def fake_grads(model: nnx.Module) -> nnx.State:
    return jax.tree.map(lambda x: 1e-2 * jnp.cos(x), nnx.state(model, nnx.Param))


def nnx_runners(dims: dict[str, int]) -> tuple[dict[str, Callable[[int], None]], int, int]:
    """Step runners for every NNX way to train, each on its own copy of the model."""
    runners: dict[str, Callable[[int], None]] = {}
    probe = make_model(dims)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(probe, nnx.Param)))
    n_leaves = len(jax.tree.leaves(nnx.state(probe, nnx.Param)))
    grads = fake_grads(probe)

    def nnx_jit(name: str, make_opt: Callable[[nnx.Module], Any], graph: bool | None) -> None:
        model = make_model(dims)
        opt = make_opt(model)

        # Tree mode (graph=False) writes the new Variable values back to the arguments;
        # graph=None is nnx.jit's default, graph mode.
        @nnx.jit(donate_argnames=("model", "optimizer"), graph=graph)
        def step(model, optimizer, grads):
            optimizer.update(model, grads)

        def run(k: int) -> None:
            for _ in range(k):
                step(model, opt, grads)
            jax.block_until_ready(nnx.state(opt))

        runners[name] = run

    nnx_jit(
        "nnx.Optimizer(optax.adam), nnx.jit",
        lambda m: nnx.Optimizer(m, optax.adam(LR), wrt=nnx.Param),
        graph=None,
    )
    nnx_jit(
        "flr NNXOptimizer(Adam), nnx.jit",
        lambda m: flr.NNXOptimizer(m, flr.optim.Adam(LR), wrt=nnx.Param),
        graph=None,
    )
    nnx_jit(
        "nnx.Optimizer(optax.adam), tree mode",
        lambda m: nnx.Optimizer(m, optax.adam(LR), wrt=nnx.Param, graph=False),
        graph=False,
    )
    nnx_jit(
        "flr NNXOptimizer(Adam), tree mode",
        lambda m: flr.NNXOptimizer(m, flr.optim.Adam(LR), wrt=nnx.Param, graph=False),
        graph=False,
    )

    def split_merge(name: str, make_opt: Callable[[nnx.Module], Any]) -> None:
        model = make_model(dims)
        opt = make_opt(model)
        graphdef, state = nnx.split((model, opt))

        def pure_step(state, grads):
            model, optimizer = nnx.merge(graphdef, state)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer))

        step = jax.jit(pure_step, donate_argnums=0)
        live = [state]

        def run(k: int) -> None:
            s = live[0]
            for _ in range(k):
                s = step(s, grads)
            jax.block_until_ready(s)
            live[0] = s

        runners[name] = run

    split_merge(
        "flr NNXOptimizer(Adam), split/merge + jax.jit",
        lambda m: flr.NNXOptimizer(m, flr.optim.Adam(LR), wrt=nnx.Param),
    )

    # The fastest: flatten the split state to a list of arrays once, so each call
    # flattens a plain list (in C++) instead of an nnx.State of Variables (in Python).
    model = make_model(dims)
    opt = flr.NNXOptimizer(model, flr.optim.Adam(LR), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    state_leaves, state_def = jax.tree.flatten(state)
    grad_leaves, grad_def = jax.tree.flatten(grads)

    def flat_step(state_leaves, grad_leaves):
        model, optimizer = nnx.merge(graphdef, jax.tree.unflatten(state_def, state_leaves))
        optimizer.update(model, jax.tree.unflatten(grad_def, grad_leaves))
        return jax.tree.leaves(nnx.state((model, optimizer)))

    flat_jit = jax.jit(flat_step, donate_argnums=0)
    flat_live = [state_leaves]

    def run_flat(k: int) -> None:
        s = flat_live[0]
        for _ in range(k):
            s = flat_jit(s, grad_leaves)
        jax.block_until_ready(s)
        flat_live[0] = s

    runners["flr NNXOptimizer(Adam), split/merge + flat leaves + jax.jit"] = run_flat

    # The floor: optax on the raw parameter pytree, no NNX at all.
    raw = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(make_model(dims), nnx.Param)))
    raw_grads = nnx.to_pure_dict(grads)
    tx = optax.adam(LR)

    def raw_step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    raw_jit = jax.jit(raw_step, donate_argnums=(0, 1))
    raw_live = [raw, tx.init(raw)]

    def run_raw(k: int) -> None:
        p, s = raw_live
        for _ in range(k):
            p, s = raw_jit(p, s, raw_grads)
        jax.block_until_ready((p, s))
        raw_live[:] = [p, s]

    runners["raw jax.jit optax.adam (pytree)"] = run_raw
    return runners, n_params, n_leaves


# --------------------------------------------------------------------------
# Compile and init time.


def compile_times(cfg: Config, known: dict[int, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Trace + compile seconds per leaf count; ``known`` holds samples taken already.

    An implementation whose time, extrapolated linearly from the previous leaf
    count, would exceed ``cfg.compile_cap_s`` is skipped (and reported as such)
    to keep the whole run within its time budget.
    """
    rows: list[dict[str, Any]] = []
    for n in cfg.compile_leaves:
        params = leaves(n, cfg.compile_size)
        grads = jax.tree.map(lambda x: 1e-2 * x, params)
        reps = 1 if n >= cfg.compile_once_from else 2
        samples: dict[str, list[float]] = {k: list(v) for k, v in known.get(n, {}).items()}
        skipped: dict[str, float] = {}
        for rep in range(reps):
            names = list(transformations().items())
            if rep % 2:
                names.reverse()
            for name, tx in names:
                if len(samples.get(name, [])) >= reps:
                    continue
                if rows and name in rows[-1]["stats"]:
                    estimate = rows[-1]["stats"][name].median * n / rows[-1]["leaves"]
                    if estimate > cfg.compile_cap_s:
                        skipped[name] = estimate
                        continue
                b, _ = build(tx, params, grads)
                samples.setdefault(name, []).append(b.trace_compile_s)
                del b
        rows.append(
            {"leaves": n, "stats": {k: Stat(v) for k, v in samples.items()}, "skipped": skipped}
        )
    return rows


def init_times(cfg: Config) -> dict[str, dict[str, Stat]]:
    """``tx.init`` against optax's, per case: same-shape leaves, then distinct shapes.

    The tutorial's Adam declares no ``elementwise`` flag, as users' optimizers
    usually do not: its init discovers the state on every parameter.
    """
    sys.path.insert(0, str(ROOT / "examples"))  # the tutorial's Adam, as written there
    from tutorial_adam import Adam as TutorialAdam

    same = leaves(cfg.init_leaves, cfg.compile_size)
    key = jax.random.key(1)
    distinct = {f"p{i:04d}": jax.random.normal(key, (i + 1,)) for i in range(cfg.init_leaves)}
    cases = {
        f"{cfg.init_leaves} leaves of {cfg.compile_size}": (
            same,
            {
                **transformations(),
                "flr as_optax(tutorial Adam)": flr.as_optax(TutorialAdam(LR)),
            },
        ),
        f"{cfg.init_leaves} leaves of distinct shapes": (
            distinct,
            {
                "optax.adam": optax.adam(LR),
                "flr as_optax(Adam)": flr.as_optax(flr.optim.Adam(LR)),
                "flr as_optax(tutorial Adam)": flr.as_optax(TutorialAdam(LR)),
            },
        ),
    }
    runs = {
        label: {name: functools.partial(tx.init, params) for name, tx in txs.items()}
        for label, (params, txs) in cases.items()
    }
    # Construction of the NNX optimizer (state creation included), as users pay it.
    model = Layers(16, 16, nnx.Rngs(0))
    runs["optimizer construction, NNX model of 32 leaves"] = {
        "nnx.Optimizer(optax.adam)": lambda: nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param),
        "flr NNXOptimizer(Adam)": lambda: flr.NNXOptimizer(
            model, flr.optim.Adam(LR), wrt=nnx.Param
        ),
        "nnx.Optimizer(as_optax(Adam))": lambda: nnx.Optimizer(
            model, flr.as_optax(flr.optim.Adam(LR)), wrt=nnx.Param
        ),
    }
    out = {}
    for label, calls in runs.items():
        samples: dict[str, list[float]] = {}
        for rep in range(cfg.init_reps):
            names = list(calls.items())
            if rep % 2:
                names.reverse()
            for name, call in names:
                start = time.perf_counter()
                result = call()
                jax.block_until_ready(
                    jax.tree.leaves(nnx.state(result) if label[0] == "o" else result)
                )
                samples.setdefault(name, []).append(time.perf_counter() - start)
        out[label] = {k: Stat(v) for k, v in samples.items()}
    return out


# --------------------------------------------------------------------------
# Report.


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import flax

    device = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "device": f"{device.platform.upper()} ({device.device_kind})",
        "versions": (
            f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, flax {flax.__version__}, "
            f"optax {optax.__version__}, Python {platform.python_version()}"
        ),
    }


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} B"


def report(results: dict[str, Any], cfg: Config, smoke: bool) -> str:
    m = results["machine"]
    base = "optax.adam"
    lines = [
        "# flr_nnx benchmarks",
        "",
        f"Machine: **{m['cpu']}, {m['cores']} cores, {m['device']}**; {m['versions']}.",
        f"Run: {results['when']} ({'smoke sizes, not meaningful' if smoke else 'full'}), "
        f"{results['wall_s']:.0f} s wall. Load average (1 min) at start / end: "
        f"{results['load'][0]:.1f} / {results['load'][1]:.1f} on {m['cores']} cores.",
        "",
        "Timings are medians of interleaved repetitions; *spread* is (max - min) / median over "
        "the repetitions, a direct measure of how noisy the machine was. Ratios are against "
        "the first row of each table, measured in the same run; *(min)* ratios compare the "
        "fastest repetitions, which other jobs on the machine disturb least. float32, "
        "`jax.jit` with donated parameters and optimizer state. CPU only: no GPU was available "
        "to this run.",
        "",
        "## Update step through the optax bridge",
        "",
        f"In-place bandwidth ceiling (donated `x * a + b` over {cfg.ceiling_size:,} float32, "
        f"8 B/element): **{results['ceiling_gbs']:.1f} GB/s** "
        f"(spread {results['ceiling'].spread:.0%}). Achieved bandwidth counts the minimum "
        f"{MIN_BYTES_PER_PARAM} B/param of Adam.",
        "",
        "| case | implementation | step | spread | vs optax | vs optax (min) | "
        "GB/s (28 B/param) | of ceiling | XLA bytes/param | kernels | temp | aliased | "
        "donated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["optax_cases"]:
        ref = case["stats"][base]
        for name, stat in case["stats"].items():
            b = case["built"][name]
            gbs = MIN_BYTES_PER_PARAM * case["n"] / stat.median / 1e9
            lines.append(
                f"| {case['label']} | {name} | {fmt_time(stat.median)} | {stat.spread:.0%} | "
                f"{stat.ratio(ref):.3f} | {stat.min_ratio(ref):.3f} | {gbs:.1f} | "
                f"{gbs / results['ceiling_gbs']:.0%} | "
                f"{b.bytes_per_param:.1f} | {b.kernels} | {fmt_bytes(b.temp_bytes)} | "
                f"{fmt_bytes(b.alias_bytes)} of {fmt_bytes(b.donated_bytes)} | "
                f"{fmt_donation(case['donation'][name])} |"
            )
    for title, key in (("NNX transformer-like model", "nnx"), ("Tiny NNX model", "tiny")):
        if key not in results:
            continue
        block = results[key]
        ref_name = "nnx.Optimizer(optax.adam), nnx.jit"
        raw_name = "raw jax.jit optax.adam (pytree)"
        lines += [
            "",
            f"## {title}: {block['n_params']:,} parameters in {block['n_leaves']} leaves",
            "",
            "Each row trains its own copy of the model (update only: fixed gradients).",
            "",
            "| how | step | spread | vs nnx.Optimizer | vs raw jax.jit | "
            "vs nnx.Optimizer (min) | vs raw jax.jit (min) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, stat in block["stats"].items():
            lines.append(
                f"| {name} | {fmt_time(stat.median)} | {stat.spread:.0%} | "
                f"{stat.ratio(block['stats'][ref_name]):.3f} | "
                f"{stat.ratio(block['stats'][raw_name]):.3f} | "
                f"{stat.min_ratio(block['stats'][ref_name]):.3f} | "
                f"{stat.min_ratio(block['stats'][raw_name]):.3f} |"
            )
    width, depth, batch = cfg.family
    lines += [
        "",
        "## Training step, one optimizer per family, against its optax twin",
        "",
        f"A tanh MLP of {depth} layers of width {width} (float32) on a fixed batch of {batch}: "
        "one `jax.jit` step with donation computes the loss and gradient, the update (with "
        "the family's extra arguments) and `optax.apply_updates`. Both sides compute the same "
        "gradient: the ratio is the cost of the optimizer's own work. flr runs through "
        "`flr.as_optax`.",
        "",
        "| family | optimizer | optax twin | flr | spread (optax / flr) | flr / optax | "
        "flr / optax (min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["families"]:
        ref, ours = row["stats"]["optax"], row["stats"]["flr"]
        lines.append(
            f"| {row['family']} | {row['name']} | {fmt_time(ref.median)} | "
            f"{fmt_time(ours.median)} | {ref.spread:.0%} / {ours.spread:.0%} | "
            f"{ours.ratio(ref):.3f} | {ours.min_ratio(ref):.3f} |"
        )
    lines += [
        "",
        "## Trace + compile time (leaves of 4096 float32)",
        "",
        "| leaves | " + " | ".join(transformations()) + " | flr / optax | packed / optax |",
        "|---|" + "---|" * (len(transformations()) + 2),
    ]
    names = list(transformations())
    for row in results["compile"]:
        s = row["stats"]
        cells = []
        for k in names:
            if k in s:
                n_s = len(s[k].samples)
                note = f"±{s[k].spread / 2:.0%} over {n_s}" if n_s > 1 else "once"
                cells.append(f"{fmt_time(s[k].median)} ({note})")
            else:
                cells.append(f"skipped (est. {row['skipped'][k]:.0f} s)")
        ratios = [
            f"{s[k].ratio(s[names[0]]):.2f}" if k in s and names[0] in s else "—" for k in names[1:]
        ]
        lines.append(f"| {row['leaves']} | " + " | ".join(cells + ratios) + " |")
    lines += ["", "## Init time (`tx.init(params)`) and optimizer construction", ""]
    for label, init in results["init"].items():
        lines += [
            f"{label}:",
            "",
            "| implementation | time | spread | vs first row |",
            "|---|---|---|---|",
        ]
        for name, stat in init.items():
            lines.append(
                f"| {name} | {fmt_time(stat.median)} | {stat.spread:.0%} | "
                f"{stat.ratio(next(iter(init.values()))):.2f} |"
            )
        lines.append("")
    lines += ["", "Reproduce: `python benchmarks/run.py` (see docs/performance.rst).", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = results["machine"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    # 1. Step-time ratios against optax / nnx.Optimizer.
    ax = axes[0]
    labels, values, colors = [], [], []
    palette = {"flr as_optax(Adam)": "tab:blue", "flr as_optax(Packed(Adam))": "tab:green"}
    for case in results["optax_cases"]:
        ref = case["stats"]["optax.adam"]
        for name, color in palette.items():
            labels.append(f"{case['label']}\n{'Packed' if 'Packed' in name else 'as_optax'}")
            values.append(case["stats"][name].ratio(ref))
            colors.append(color)
    ref = results["nnx"]["stats"]["nnx.Optimizer(optax.adam), nnx.jit"]
    for name, stat in results["nnx"]["stats"].items():
        if name.startswith("flr"):
            labels.append("NNX model\n" + name.split(", ", 1)[1])
            values.append(stat.ratio(ref))
            colors.append("tab:orange")
    y = np.arange(len(values))
    ax.barh(y, values, color=colors)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("step time / optax (or nnx.Optimizer) — lower is faster")
    ax.set_title("Update-step time ratio")
    # 2. Trace + compile vs leaves.
    ax = axes[1]
    for name in transformations():
        rows = [row for row in results["compile"] if name in row["stats"]]
        xs = [row["leaves"] for row in rows]
        ys = [row["stats"][name].median for row in rows]
        ax.plot(xs, ys, "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("leaves (4096 float32 each)")
    ax.set_ylabel("trace + compile (s)")
    ax.set_title("Trace + compile time")
    ax.legend(fontsize=7)
    # 3. Achieved bandwidth vs the ceiling.
    ax = axes[2]
    cases = results["optax_cases"]
    width = 0.27
    for j, name in enumerate(["optax.adam", *palette]):
        gbs = [MIN_BYTES_PER_PARAM * c["n"] / c["stats"][name].median / 1e9 for c in cases]
        ax.bar(np.arange(len(cases)) + (j - 1) * width, gbs, width, label=name)
    ax.axhline(results["ceiling_gbs"], color="k", ls="--", lw=1, label="in-place ceiling")
    ax.set_xticks(np.arange(len(cases)), [c["label"] for c in cases], fontsize=8)
    ax.set_ylabel("GB/s at 28 B/param")
    ax.set_title("Achieved bandwidth")
    ax.legend(fontsize=7)
    fig.suptitle(
        f"flr_nnx vs optax — {m['cpu']}, {m['cores']} cores, {m['device']}; {m['versions']}\n"
        f"run {results['when']}, load average {results['load'][0]:.1f} / "
        f"{results['load'][1]:.1f} (start / end): see the spread columns in docs/benchmarks.md",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: exercise every path")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=ROOT / "docs",
        help="where benchmarks.md and _static/benchmarks.png go",
    )
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else FULL
    start = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": [os.getloadavg()[0]],
    }

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {text}", flush=True)

    say("bandwidth ceiling")
    results["ceiling"] = bandwidth_ceiling(cfg)
    results["ceiling_gbs"] = 8 * cfg.ceiling_size / results["ceiling"].median / 1e9
    cases = []
    for size in cfg.single:
        label = f"1 x {size / 2**20:g}M" if size >= 2**20 else f"1 x {size}"
        say(f"step: {label}")
        cases.append(bench_optax_case(label, leaves(1, size), cfg))
    n, size = cfg.many
    say(f"step: {n} x {size}")
    cases.append(bench_optax_case(f"{n} x {size}", leaves(n, size), cfg))
    results["optax_cases"] = cases
    for key, dims in (("nnx", cfg.model), ("tiny", cfg.tiny_model)):
        if not dims:
            continue
        say(f"NNX {key} model")
        runners, n_params, n_leaves = nnx_runners(dims)
        results[key] = {
            "stats": interleaved(runners, cfg),
            "n_params": n_params,
            "n_leaves": n_leaves,
        }
    say("one optimizer per family")
    results["families"] = family_steps(interleaved, cfg, *cfg.family)
    say("trace + compile")
    known = {n: {k: [b.trace_compile_s] for k, b in cases[-1]["built"].items()}}
    results["compile"] = compile_times(cfg, known)
    say("init")
    results["init"] = init_times(cfg)
    results["load"].append(os.getloadavg()[0])
    results["wall_s"] = time.perf_counter() - start
    text = report(results, cfg, args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.md").write_text(text)
    plot(results, args.out / "_static" / "benchmarks.png")
    say(f"wrote {args.out / 'benchmarks.md'} and {args.out / '_static' / 'benchmarks.png'}")
    print(text)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
