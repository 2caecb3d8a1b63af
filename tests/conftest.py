import pathlib
import sys

import jax

# Strict JAX settings, as equinox tests do: implicit rank promotion is a bug.
jax.config.update("jax_numpy_rank_promotion", "raise")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
