"""Hook optimizers: the base class, composition, and the optimizer zoo."""

from flr_nnx._optimizer import Key as Key
from flr_nnx._optimizer import Optimizer as Optimizer
from flr_nnx.optim._adabelief import AdaBelief as AdaBelief
from flr_nnx.optim._adam import Adam as Adam
from flr_nnx.optim._adamax import Adamax as Adamax
from flr_nnx.optim._adamw import AdamW as AdamW
from flr_nnx.optim._adamw import NAdamW as NAdamW
from flr_nnx.optim._amsgrad import AMSGrad as AMSGrad
from flr_nnx.optim._chain import Chain as Chain
from flr_nnx.optim._from_optax import FromOptax as FromOptax
from flr_nnx.optim._from_optax import from_optax as from_optax
from flr_nnx.optim._groups import Partition as Partition
from flr_nnx.optim._groups import freeze as freeze
from flr_nnx.optim._lion import Lion as Lion
from flr_nnx.optim._mask import KeyMask as KeyMask
from flr_nnx.optim._mask import Mask as Mask
from flr_nnx.optim._mask import key_mask as key_mask
from flr_nnx.optim._nadam import NAdam as NAdam
from flr_nnx.optim._packed import Packed as Packed
from flr_nnx.optim._radam import RAdam as RAdam
from flr_nnx.optim._sgd import SGD as SGD
from flr_nnx.optim._sgd import SignSGD as SignSGD
from flr_nnx.optim._wrappers import MixedPrecision as MixedPrecision
from flr_nnx.optim._wrappers import MultiSteps as MultiSteps
from flr_nnx.optim._wrappers import SkipNonFinite as SkipNonFinite
