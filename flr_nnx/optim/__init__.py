"""Hook optimizers: the base class, composition, and the optimizer zoo."""

from flr_nnx._optimizer import Key as Key
from flr_nnx._optimizer import Optimizer as Optimizer
from flr_nnx.optim._adam import Adam as Adam
from flr_nnx.optim._chain import Chain as Chain
from flr_nnx.optim._from_optax import FromOptax as FromOptax
from flr_nnx.optim._from_optax import from_optax as from_optax
from flr_nnx.optim._mask import KeyMask as KeyMask
from flr_nnx.optim._mask import Mask as Mask
from flr_nnx.optim._mask import key_mask as key_mask
