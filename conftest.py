"""pytest settings for every test and doctest in this checkout (tests/ and flr_nnx/).

It lives at the repository root, outside the package, so the wheel does not ship
it, and applies to the doctests that ``--doctest-modules`` collects in flr_nnx/.
"""

import jax

# Strict JAX settings, as equinox tests do: implicit rank promotion is a bug.
jax.config.update("jax_numpy_rank_promotion", "raise")
