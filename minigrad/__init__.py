"""minigrad: a small tensor library with a define-by-run autograd engine on NumPy.

Torch's names, NumPy underneath, and every op's forward next to its backward in
``minigrad/ops.py``; the engine (ordering and accumulation) is ``minigrad/autograd.py``. The
fast path for the few heavy computations is ``minigrad/kernels.py`` (``MINIGRAD_KERNELS=plain``
runs their plain references instead).
"""

import numpy as np

from minigrad import kernels, nn, optim, viz
from minigrad.autograd import Function, enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled
from minigrad.errors import (
    BackwardError,
    CheckpointError,
    DtypeError,
    GradcheckError,
    InplaceError,
    MinigradError,
    ShapeError,
    TargetError,
)
from minigrad.functional import *  # noqa: F403 - torch-style free functions
from minigrad.functional import __all__ as _functional_names
from minigrad.gradcheck import gradcheck
from minigrad.nn import load, save
from minigrad.tensor import (
    Tensor,
    arange,
    bool_,
    float16,
    float32,
    float64,
    from_numpy,
    full,
    full_like,
    int32,
    int64,
    manual_seed,
    ones,
    ones_like,
    rand,
    rand_like,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)
from minigrad.viz import trace

bool = bool_  # noqa: A001 - torch's dtype aliases
float = float32  # noqa: A001
double = float64
long = int64
dtype = np.dtype

__version__ = "0.1.0"

__all__ = [
    "kernels",
    "nn",
    "optim",
    "viz",
    "trace",
    "save",
    "load",
    "Tensor",
    "Function",
    "tensor",
    "from_numpy",
    "randn",
    "rand",
    "zeros",
    "ones",
    "full",
    "arange",
    "zeros_like",
    "ones_like",
    "randn_like",
    "rand_like",
    "full_like",
    "manual_seed",
    "float16",
    "float32",
    "float64",
    "int32",
    "int64",
    "bool",
    "float",
    "double",
    "long",
    "dtype",
    "no_grad",
    "enable_grad",
    "set_grad_enabled",
    "is_grad_enabled",
    "grad",
    "gradcheck",
    "MinigradError",
    "ShapeError",
    "DtypeError",
    "InplaceError",
    "BackwardError",
    "GradcheckError",
    "TargetError",
    "CheckpointError",
    *_functional_names,
]
