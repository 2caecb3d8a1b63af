"""Public helpers for writing optimizers: the arithmetic the built-ins share, and masks.

Everything the zoo in :mod:`flr_nnx.optim` uses besides the base class and the errors lives
here, so an optimizer you write can use exactly what the built-ins use.
"""

from flr_nnx.helpers._checks import BOUNDS as BOUNDS
from flr_nnx.helpers._checks import NONNEGATIVE as NONNEGATIVE
from flr_nnx.helpers._checks import UNIT as UNIT
from flr_nnx.helpers._checks import UNIT_CLOSED as UNIT_CLOSED
from flr_nnx.helpers._checks import Bound as Bound
from flr_nnx.helpers._checks import bound_of as bound_of
from flr_nnx.helpers._checks import check_hyper as check_hyper
from flr_nnx.helpers._checks import set_hypers as set_hypers
from flr_nnx.helpers._common import ScalarOrSchedule as ScalarOrSchedule
from flr_nnx.helpers._common import abs_sq as abs_sq
from flr_nnx.helpers._common import cast as cast
from flr_nnx.helpers._common import check_complex_state as check_complex_state
from flr_nnx.helpers._common import reject_complex as reject_complex
from flr_nnx.helpers._common import scale as scale
from flr_nnx.helpers._common import trust_ratio as trust_ratio
from flr_nnx.helpers._defaults import with_defaults as with_defaults
from flr_nnx.helpers._linesearch import zoom_linesearch as zoom_linesearch
from flr_nnx.helpers._linesearch import zoom_linesearch_init as zoom_linesearch_init
from flr_nnx.helpers._mask import KeyMask as KeyMask
from flr_nnx.helpers._mask import Mask as Mask
from flr_nnx.helpers._mask import MaskLike as MaskLike
from flr_nnx.helpers._mask import key_mask as key_mask
from flr_nnx.helpers._mask import key_of as key_of
from flr_nnx.helpers._mask import unflatten as unflatten
from flr_nnx.helpers._prng import prng_key as prng_key
from flr_nnx.helpers._schedule_free import schedule_free_eval as schedule_free_eval
from flr_nnx.helpers._schedule_free import schedule_free_step as schedule_free_step
from flr_nnx.helpers._schedule_free import schedule_free_weight as schedule_free_weight
from flr_nnx.helpers._steps import advance as advance
from flr_nnx.helpers._steps import advance_all as advance_all
from flr_nnx.helpers._steps import bias_correction as bias_correction
from flr_nnx.helpers._steps import bias_corrections as bias_corrections
from flr_nnx.helpers._steps import debias as debias
from flr_nnx.helpers._steps import debias_momentum as debias_momentum
from flr_nnx.helpers._steps import decayed as decayed
from flr_nnx.helpers._steps import ema as ema
from flr_nnx.helpers._steps import global_norm as global_norm
from flr_nnx.helpers._steps import is_zero as is_zero
from flr_nnx.helpers._steps import needs_count as needs_count
from flr_nnx.helpers._steps import sum_of_squares as sum_of_squares
from flr_nnx.helpers._steps import tick as tick
from flr_nnx.helpers._steps import value_at as value_at
