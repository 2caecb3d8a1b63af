"""The optimizer zoo: algorithms written on the hooks, and the base class they share."""

from flr_nnx._optimizer import Key as Key
from flr_nnx._optimizer import Optimizer as Optimizer
from flr_nnx._optimizer import call as call
from flr_nnx.optim._adabelief import AdaBelief as AdaBelief
from flr_nnx.optim._adafactor import Adafactor as Adafactor
from flr_nnx.optim._adagrad import Adagrad as Adagrad
from flr_nnx.optim._adam import Adam as Adam
from flr_nnx.optim._adamax import Adamax as Adamax
from flr_nnx.optim._adamw import AdamW as AdamW
from flr_nnx.optim._adamw import NAdamW as NAdamW
from flr_nnx.optim._amsgrad import AMSGrad as AMSGrad
from flr_nnx.optim._blocks import AddDecayedWeights as AddDecayedWeights
from flr_nnx.optim._blocks import Clip as Clip
from flr_nnx.optim._blocks import ClipByGlobalNorm as ClipByGlobalNorm
from flr_nnx.optim._blocks import ScaleByLearningRate as ScaleByLearningRate
from flr_nnx.optim._lamb import LAMB as LAMB
from flr_nnx.optim._lion import Lion as Lion
from flr_nnx.optim._muon import Muon as Muon
from flr_nnx.optim._nadam import NAdam as NAdam
from flr_nnx.optim._noisy_sgd import NoisySGD as NoisySGD
from flr_nnx.optim._polyak import PolyakSGD as PolyakSGD
from flr_nnx.optim._radam import RAdam as RAdam
from flr_nnx.optim._reduce_on_plateau import ReduceOnPlateau as ReduceOnPlateau
from flr_nnx.optim._rmsprop import RMSProp as RMSProp
from flr_nnx.optim._sgd import SGD as SGD
from flr_nnx.optim._sgd import SignSGD as SignSGD
