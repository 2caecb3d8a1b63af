"""Public helpers for writing optimizers: the arithmetic the built-ins share, and masks.

Everything the zoo in :mod:`flr_nnx.optim` uses besides the base class and the errors lives
here, so an optimizer you write can use exactly what the built-ins use.
"""

from flr_nnx.helpers._common import ScalarOrSchedule as ScalarOrSchedule
from flr_nnx.helpers._common import abs_sq as abs_sq
from flr_nnx.helpers._common import advance as advance
from flr_nnx.helpers._common import cast as cast
from flr_nnx.helpers._common import check_complex_state as check_complex_state
from flr_nnx.helpers._common import check_hyper as check_hyper
from flr_nnx.helpers._common import needs_count as needs_count
from flr_nnx.helpers._common import reject_complex as reject_complex
from flr_nnx.helpers._common import scale as scale
from flr_nnx.helpers._common import value_at as value_at
from flr_nnx.helpers._mask import KeyMask as KeyMask
from flr_nnx.helpers._mask import Mask as Mask
from flr_nnx.helpers._mask import MaskLike as MaskLike
from flr_nnx.helpers._mask import key_mask as key_mask
from flr_nnx.helpers._mask import unflatten as unflatten
