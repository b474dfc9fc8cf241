"""Gated ResNet encoders, their structure and their FLOPs accounting.

`arch`, `config`, `flops` and `channels` are torch-free (the deploy side reads them); the PyTorch
modules (`resnet`, `gate`) are imported only when one of their names is first used.
"""

from gatekit.models.arch import Architecture, BlockShape
from gatekit.models.config import ModelConfig
from gatekit.models.flops import BlockCost, CostModel, cost_model

_TORCH_NAMES = {
    "ChannelGate": "gatekit.models.gate",
    "gate_mask": "gatekit.models.gate",
    "PATHS": "gatekit.models.resnet",
    "BackboneOutput": "gatekit.models.resnet",
    "GatedBasicBlock": "gatekit.models.resnet",
    "GatedResNet": "gatekit.models.resnet",
}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module 'gatekit.models' has no attribute {name!r}")


__all__ = [
    "PATHS",
    "Architecture",
    "BackboneOutput",
    "BlockCost",
    "BlockShape",
    "ChannelGate",
    "CostModel",
    "GatedBasicBlock",
    "GatedResNet",
    "ModelConfig",
    "cost_model",
    "gate_mask",
]
