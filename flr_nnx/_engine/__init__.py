"""The engine: runs a mutable hook optimizer as a pure JAX function.

Rebuild a private copy of the optimizer with the state put back, run its
``__call__``, read the state out; at init, record what the hooks create. See
README.md in this package for the modules, the data flow and the invariants.
Both bridges (NNX and optax) call :func:`init`, :func:`step` and :func:`evaluate`; nothing else
runs hooks or touches an optimizer's state.
"""

from flr_nnx._engine._checks import check_grads as check_grads
from flr_nnx._engine._checks import check_transient as check_transient
from flr_nnx._engine._checks import check_updates as check_updates
from flr_nnx._engine._grouped import is_elementwise as is_elementwise
from flr_nnx._engine._record import RUN as RUN
from flr_nnx._engine._run import call_hooks as call_hooks
from flr_nnx._engine._run import evaluate as evaluate
from flr_nnx._engine._run import init as init
from flr_nnx._engine._run import step as step
from flr_nnx._engine._state import HookState as HookState
from flr_nnx._engine._state import Layout as Layout
from flr_nnx._engine._state import is_live as is_live
from flr_nnx._engine._state import mark_live as mark_live
from flr_nnx._engine._state import nest as nest
from flr_nnx._engine._walk import ABSENT as ABSENT
from flr_nnx._engine._walk import ATTR as ATTR
from flr_nnx._engine._walk import FIELD as FIELD
from flr_nnx._engine._walk import INDEX as INDEX
from flr_nnx._engine._walk import ITEM as ITEM
from flr_nnx._engine._walk import NODE as NODE
from flr_nnx._engine._walk import SKIP as SKIP
from flr_nnx._engine._walk import Path as Path
from flr_nnx._engine._walk import Step as Step
from flr_nnx._engine._walk import Walk as Walk
from flr_nnx._engine._walk import children as children
from flr_nnx._engine._walk import format_path as format_path
from flr_nnx._engine._walk import is_array as is_array
from flr_nnx._engine._walk import put as put
from flr_nnx._engine._walk import rebuild as rebuild
from flr_nnx._engine._walk import transient_values as transient_values
from flr_nnx._engine._walk import traverse as traverse
from flr_nnx._engine._walk import walk as walk
from flr_nnx._tree import unnest as unnest
