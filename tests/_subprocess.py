"""Python in a fresh interpreter, for the tests that need one.

A test runs Python in a subprocess when the process itself matters: a device count
or x64 fixed at JAX's start, a restore with nothing left in memory, several hosts,
the docs build. The children import this checkout's flr_nnx (the repository root
comes first on ``PYTHONPATH``), as the test process does.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds


def python_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment for a child; an override of ``None`` removes the variable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_python(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = TIMEOUT, **kwargs
) -> subprocess.CompletedProcess[str]:
    """Runs ``python *args`` to the end and returns it, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=python_env() if env is None else env,
        timeout=timeout,
        **kwargs,
    )


def start_python(args: Sequence[str], *, log: IO[str], env: dict[str, str]) -> subprocess.Popen:
    """Starts ``python *args`` in the background, its output (stderr too) going to ``log``."""
    return subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def result_of(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a child printed after ``RESULT `` (a child that failed: its stderr's end)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])
