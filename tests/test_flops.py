import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gatekit.models import GatedResNet, ModelConfig, cost_model


@pytest.mark.parametrize(
    "cfg,expected",
    [
        (ModelConfig(stem="cifar", input_size=32, stem_padding=2), 703_560_448),
        (ModelConfig(stem="imagenet", input_size=96), 333_103_104),
        (ModelConfig(stem="imagenet", input_size=224), 1_813_561_344),
    ],
)
def test_dense_macs_match_the_paper(cfg, expected):
    assert cost_model(cfg).dense_macs == expected


def test_gate_macs_match_the_paper():
    assert cost_model(ModelConfig()).gate_macs == 240_640


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(width=0.25),
        ModelConfig(stem="imagenet", input_size=96, width=0.5),
        ModelConfig(arch="resnet34", width=0.25, stem_padding=1),
    ],
)
def test_dense_count_agrees_with_flop_counter(cfg):
    model = GatedResNet(cfg).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, cfg.input_size, cfg.input_size), "dense")
    assert counter.get_total_flops() == 2 * cost_model(cfg).dense_macs


def test_gated_count_agrees_with_flop_counter_on_a_physically_pruned_block():
    cfg = ModelConfig(width=0.25)
    cost = cost_model(cfg)
    block = cost.blocks[2]  # layer2.0: stride 2 with a downsample shortcut
    c = 5
    conv1 = torch.nn.Conv2d(block.in_channels, c, 3, 2, 1, bias=False)
    conv2 = torch.nn.Conv2d(c, block.planes, 3, 1, 1, bias=False)
    ds = torch.nn.Conv2d(block.in_channels, block.planes, 1, 2, bias=False)
    x = torch.randn(1, block.in_channels, 34, 34)
    with FlopCounterMode(display=False) as counter:
        conv2(conv1(x)) + ds(x)
    assert counter.get_total_flops() == 2 * block.macs(c)


def test_gated_macs_per_sample():
    cost = cost_model(ModelConfig(width=0.125))
    active = torch.tensor([[b.planes for b in cost.blocks], [0] * len(cost.blocks)], dtype=torch.float64)
    macs = cost.gated_macs([active[:, b] for b in range(active.shape[1])])
    assert macs[0].item() == cost.dense_macs + cost.gate_macs
    assert macs[1].item() == cost.stem_macs + cost.gate_macs + sum(b.downsample_macs for b in cost.blocks)
