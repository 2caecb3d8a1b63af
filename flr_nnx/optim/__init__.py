"""The optimizer zoo: algorithms written on the hooks, and the base class they share."""

from flr_nnx._optimizer import Key as Key
from flr_nnx._optimizer import Optimizer as Optimizer
from flr_nnx._optimizer import call as call
from flr_nnx.optim._acprop import AcProp as AcProp
from flr_nnx.optim._adabelief import AdaBelief as AdaBelief
from flr_nnx.optim._adadelta import Adadelta as Adadelta
from flr_nnx.optim._adafactor import Adafactor as Adafactor
from flr_nnx.optim._adagrad import Adagrad as Adagrad
from flr_nnx.optim._adam import Adam as Adam
from flr_nnx.optim._adamax import Adamax as Adamax
from flr_nnx.optim._adamaxw import AdamaxW as AdamaxW
from flr_nnx.optim._adamw import AdamW as AdamW
from flr_nnx.optim._adamw import NAdamW as NAdamW
from flr_nnx.optim._adan import Adan as Adan
from flr_nnx.optim._ademamix import AdEMAMix as AdEMAMix
from flr_nnx.optim._ademamix import SimplifiedAdEMAMix as SimplifiedAdEMAMix
from flr_nnx.optim._adopt import ADOPT as ADOPT
from flr_nnx.optim._amsgrad import AMSGrad as AMSGrad
from flr_nnx.optim._blocks import AddDecayedWeights as AddDecayedWeights
from flr_nnx.optim._blocks import Clip as Clip
from flr_nnx.optim._blocks import ClipByGlobalNorm as ClipByGlobalNorm
from flr_nnx.optim._blocks import ScaleByLearningRate as ScaleByLearningRate
from flr_nnx.optim._cocob import COCOB as COCOB
from flr_nnx.optim._dadapt import DAdaptAdamW as DAdaptAdamW
from flr_nnx.optim._dadapt import Prodigy as Prodigy
from flr_nnx.optim._dog import DoG as DoG
from flr_nnx.optim._dog import DoWG as DoWG
from flr_nnx.optim._dpsgd import DPSGD as DPSGD
from flr_nnx.optim._dpsgd import (
    DifferentiallyPrivateAggregate as DifferentiallyPrivateAggregate,
)
from flr_nnx.optim._fromage import Fromage as Fromage
from flr_nnx.optim._lamb import LAMB as LAMB
from flr_nnx.optim._lars import LARS as LARS
from flr_nnx.optim._lion import Lion as Lion
from flr_nnx.optim._madgrad import MADGRAD as MADGRAD
from flr_nnx.optim._momo import Momo as Momo
from flr_nnx.optim._momo import MomoAdam as MomoAdam
from flr_nnx.optim._muon import Muon as Muon
from flr_nnx.optim._nadam import NAdam as NAdam
from flr_nnx.optim._noisy_sgd import NoisySGD as NoisySGD
from flr_nnx.optim._novograd import NovoGrad as NovoGrad
from flr_nnx.optim._optimistic import OptimisticAdamV2 as OptimisticAdamV2
from flr_nnx.optim._optimistic import OptimisticGradientDescent as OptimisticGradientDescent
from flr_nnx.optim._optimistic_adam import OptimisticAdam as OptimisticAdam
from flr_nnx.optim._polyak import PolyakSGD as PolyakSGD
from flr_nnx.optim._radam import RAdam as RAdam
from flr_nnx.optim._reduce_on_plateau import ReduceOnPlateau as ReduceOnPlateau
from flr_nnx.optim._rmsprop import RMSProp as RMSProp
from flr_nnx.optim._rprop import Rprop as Rprop
from flr_nnx.optim._sgd import SGD as SGD
from flr_nnx.optim._sgd import SignSGD as SignSGD
from flr_nnx.optim._signum import Signum as Signum
from flr_nnx.optim._sm3 import SM3 as SM3
from flr_nnx.optim._sophia import Sophia as Sophia
from flr_nnx.optim._yogi import Yogi as Yogi
