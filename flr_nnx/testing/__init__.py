"""Tools to prove a hook optimizer against optax: :func:`assert_matches`."""

from flr_nnx.testing._assert_matches import MatchReport as MatchReport
from flr_nnx.testing._assert_matches import MismatchError as MismatchError
from flr_nnx.testing._assert_matches import assert_matches as assert_matches
from flr_nnx.testing._assert_matches import default_grads as default_grads
