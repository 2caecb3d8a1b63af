"""Tools to prove a hook optimizer against optax: :func:`assert_matches`.

:func:`assert_matches` checks one optimizer; :func:`run_cases` runs many
:class:`Case` s in shared compiled programs, and :func:`compare_updates`
checks each one's updates as :func:`assert_matches` does.
"""

from flr_nnx.testing._assert_matches import assert_matches as assert_matches
from flr_nnx.testing._compare import MatchReport as MatchReport
from flr_nnx.testing._compare import MismatchError as MismatchError
from flr_nnx.testing._compare import compare_updates as compare_updates
from flr_nnx.testing._run import Case as Case
from flr_nnx.testing._run import Run as Run
from flr_nnx.testing._run import default_grads as default_grads
from flr_nnx.testing._run import run_cases as run_cases
