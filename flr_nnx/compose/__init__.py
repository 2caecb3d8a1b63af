"""Optimizers of optimizers: chains, partitions, wrappers, packing and optax adapters.

Each takes hook optimizers (or an optax transformation, for :func:`from_optax`) and is itself
a hook optimizer, so it runs through both bridges like any optimizer in :mod:`flr_nnx.optim`.
"""

from flr_nnx.compose._chain import Chain as Chain
from flr_nnx.compose._complex import SplitRealAndImaginary as SplitRealAndImaginary
from flr_nnx.compose._from_optax import FromOptax as FromOptax
from flr_nnx.compose._from_optax import from_optax as from_optax
from flr_nnx.compose._groups import Partition as Partition
from flr_nnx.compose._groups import freeze as freeze
from flr_nnx.compose._lookahead import Lookahead as Lookahead
from flr_nnx.compose._mechanize import Mechanize as Mechanize
from flr_nnx.compose._packed import Packed as Packed
from flr_nnx.compose._reset import InitialState as InitialState
from flr_nnx.compose._sam import SAM as SAM
from flr_nnx.compose._schedule_free import ScheduleFree as ScheduleFree
from flr_nnx.compose._wrappers import MixedPrecision as MixedPrecision
from flr_nnx.compose._wrappers import MultiSteps as MultiSteps
from flr_nnx.compose._wrappers import SkipNonFinite as SkipNonFinite
