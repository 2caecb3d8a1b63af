"""flr_nnx: write an optimizer as a small class with hooks; run it in Flax NNX and optax."""

from flr_nnx import compose as compose
from flr_nnx import helpers as helpers
from flr_nnx import optim as optim
from flr_nnx import testing as testing
from flr_nnx._checkpoint import load_state_dict as load_state_dict
from flr_nnx._checkpoint import state_dict as state_dict
from flr_nnx._engine import HookState as HookState
from flr_nnx._errors import ArgumentError as ArgumentError
from flr_nnx._errors import BridgeError as BridgeError
from flr_nnx._errors import ComplexParameterError as ComplexParameterError
from flr_nnx._errors import FlrError as FlrError
from flr_nnx._errors import HookError as HookError
from flr_nnx._errors import HyperparameterError as HyperparameterError
from flr_nnx._errors import MissingArgumentError as MissingArgumentError
from flr_nnx._errors import StateError as StateError
from flr_nnx._errors import StructureError as StructureError
from flr_nnx._errors import TracerLeakError as TracerLeakError
from flr_nnx._errors import TransientReadError as TransientReadError
from flr_nnx._eval import eval_params as eval_params
from flr_nnx._hyper import hyper as hyper
from flr_nnx._hyper_access import get_hyper as get_hyper
from flr_nnx._hyper_access import set_hyper as set_hyper
from flr_nnx._nnx import NNXOptimizer as NNXOptimizer
from flr_nnx._nnx_variables import OptimizerSlot as OptimizerSlot
from flr_nnx._optax import as_optax as as_optax
from flr_nnx.compose import from_optax as from_optax

__version__ = "0.1.0"
