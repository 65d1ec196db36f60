"""Fully sharded data parallel for the Accelerate loop (``--fsdp``): FSDP2, PyTorch's
``torch.distributed.fsdp.fully_shard``, one group per encoder layer and one for the rest (the root).

Each process keeps 1/N of every parameter, of its gradient and of its optimizer state, and gathers
a layer's full weights just before using them. FSDP2 shards each parameter on its own, so frozen
and trainable parameters may share a group (every ``--strategy`` works). Accelerate (1.16) turns
its FSDP plugin on only for GPU-like devices (on a CPU ``prepare`` would wrap the model in DDP), so
``fully_shard`` is called directly, the same on every device. Checkpoints hold each process's
shards (``torch.distributed.checkpoint``) beside Accelerate's RNG and scheduler state; the trained
model comes back whole, as a plain model, for ``save_pretrained``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from finetune.model.modeling import encoder_layers

SHARDS_DIR = "sharded"  # in a checkpoint folder: model and optimizer shards, one file per process


class Sharded:
    """A model sharded with ``fully_shard`` over all processes, and how to save, load and gather it."""

    def __init__(self, model: PreTrainedModel, mode: str, precision: str, device: torch.device) -> None:
        """Shard ``model`` in place: ``mode`` is ``full_shard`` (each layer's weights are freed after
        its forward and gathered again for its backward) or ``shard_grad_op`` (kept until the
        backward); ``precision``: Accelerate's ``mixed_precision``, ``no`` or ``bf16``."""
        self.skeleton = empty_copy(model)
        dtype = torch.bfloat16 if precision == "bf16" else None  # compute and reduce in it, as Accelerate's plugin
        options: dict[str, Any] = {
            "mesh": init_device_mesh(device.type, (dist.get_world_size(),)),
            "reshard_after_forward": mode == "full_shard",
            "mp_policy": MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=dtype),
        }
        for layer in encoder_layers(model):
            fully_shard(layer, **options)
        fully_shard(model, **options)
        self.model = model

    def save(self, folder: Path, optimizer: torch.optim.Optimizer) -> None:
        """Every process writes its shards of the weights and the optimizer state (collective)."""
        model_state, optimizer_state = get_state_dict(self.model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder / SHARDS_DIR)

    def load(self, folder: Path, optimizer: torch.optim.Optimizer) -> None:
        """Read back what ``save`` wrote, each process its shards (collective)."""
        model_state, optimizer_state = get_state_dict(self.model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=folder / SHARDS_DIR)
        set_state_dict(self.model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    @staticmethod
    def global_norm(norm: torch.Tensor) -> torch.Tensor:
        """The norm of sharded gradients is a DTensor: the whole norm, the same in every process."""
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def gathered(self) -> PreTrainedModel:
        """The trained model whole, on the CPU and unsharded, in every process."""
        return gather(self.model, self.skeleton)


def gather(sharded: torch.nn.Module, skeleton: PreTrainedModel) -> PreTrainedModel:
    """``skeleton`` (``empty_copy`` of the model before sharding) holding the weights of ``sharded``
    (collective: one parameter is gathered at a time, so no device holds more than one extra)."""
    full = {
        name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().cpu()
        for name, value in sharded.state_dict().items()
    }
    skeleton.load_state_dict(full, assign=True)
    return skeleton


def trainer_arguments(mode: str, model: PreTrainedModel) -> dict[str, Any]:
    """``--fsdp`` for the Trainer (GPU only: ``TrainConfig.validate``): FSDP2 through Accelerate's
    plugin, one group per encoder layer, sharded checkpoints."""
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": mode == "full_shard",
            "transformer_layer_cls_to_wrap": [type(encoder_layers(model)[0]).__name__],
            "state_dict_type": "SHARDED_STATE_DICT",
        },
    }


def empty_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of ``model`` whose parameters are on the meta device (no memory; buffers copied),
    to load the gathered weights into at the end."""
    memo: dict[int, Any] = {
        id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()
    }
    return copy.deepcopy(model, memo)
