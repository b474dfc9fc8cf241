"""Gated ResNet encoders and their FLOPs accounting."""

from gatekit.models.config import ModelConfig
from gatekit.models.flops import BlockCost, CostModel, cost_model
from gatekit.models.gate import ChannelGate, gate_mask
from gatekit.models.resnet import PATHS, BackboneOutput, GatedBasicBlock, GatedResNet

__all__ = [
    "PATHS", "BackboneOutput", "BlockCost", "ChannelGate", "CostModel", "GatedBasicBlock", "GatedResNet",
    "ModelConfig", "cost_model", "gate_mask",
]
