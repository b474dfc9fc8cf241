import pytest
import torch

from gatekit.errors import GatekitError
from gatekit.models import ChannelGate, GatedResNet, ModelConfig, gate_mask


def test_gate_eval_threshold_counts_ties_as_on():
    logits = torch.tensor([[-1.0, 0.0, 2.0, -1e-6]])
    assert gate_mask(logits, 2 / 3, training=False).tolist() == [[0.0, 1.0, 1.0, 0.0]]


def test_gate_training_is_binary_forward_with_straight_through_gradient():
    torch.manual_seed(0)
    logits = torch.randn(64, 32, requires_grad=True)
    m = gate_mask(logits, 2 / 3, training=True)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    # the gradient is that of sigmoid((l + g) / tau): recompute it with the same noise
    torch.manual_seed(0)
    _ = torch.randn(64, 32)
    u = torch.rand(64, 32)
    g = torch.log(u + 1e-8) - torch.log(1 - u + 1e-8)
    s = torch.sigmoid((logits.detach() + g) / (2 / 3))
    w = torch.randn(64, 32)
    (m * w).sum().backward()
    assert torch.allclose(logits.grad, w * s * (1 - s) / (2 / 3), atol=1e-6)
    assert torch.equal(m.detach(), (logits.detach() + g >= 0).float())


def test_gate_noise_flips_decisions_only_in_training():
    gate = ChannelGate(16, 32)
    x = torch.randn(8, 16, 4, 4)
    gate.eval()
    assert torch.equal(gate(x), gate(x))
    gate.train()
    torch.manual_seed(1)
    assert not torch.equal(gate(x), gate(x))


def test_gate_group_shares_one_decision_per_group():
    gate = ChannelGate(16, 32, group=8).eval()
    m = gate(torch.randn(5, 16, 4, 4))
    assert m.shape == (5, 32)
    assert gate.fc2.out_features == 4
    assert torch.equal(m.view(5, 4, 8), m.view(5, 4, 8)[:, :, :1].expand(5, 4, 8))


def test_gate_group_must_divide_widths():
    with pytest.raises(GatekitError, match="gate_group 48 does not divide"):
        ModelConfig(width=0.25, gate_group=48)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(GatekitError, match="unknown architecture 'resnet50'"):
        ModelConfig(arch="resnet50")


def test_paths_share_convs_but_not_block_bns():
    model = GatedResNet(ModelConfig(width=0.125))
    names = [n for n, _ in model.named_parameters()]
    assert "blocks.0.bn1.dense.weight" in names and "blocks.0.bn1.gated.weight" in names
    assert "stem_bn.weight" in names and not any("stem_bn.dense" in n for n in names)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    model(x, "dense")
    assert model.blocks[0].bn1.gated.num_batches_tracked.item() == 0
    assert model.blocks[0].bn1.dense.num_batches_tracked.item() == 1
    with pytest.raises(ValueError, match="path must be one of"):
        model(x, "sparse")


def test_gated_path_with_all_gates_on_equals_dense_path_with_same_bns():
    model = GatedResNet(ModelConfig(width=0.125)).eval()
    for block in model.blocks:
        block.bn1.gated.load_state_dict(block.bn1.dense.state_dict())
        block.bn2.gated.load_state_dict(block.bn2.dense.state_dict())
        block.gate.fc2.weight.data.zero_()  # logit 0 -> on
    x = torch.randn(3, 3, 32, 32)
    dense = model(x, "dense")
    gated = model(x, "gated")
    assert all(bool(m.all()) for m in gated.masks)
    assert torch.allclose(dense.features, gated.features, atol=1e-6)


def test_masked_channel_contributes_nothing():
    model = GatedResNet(ModelConfig(width=0.125)).eval()
    block = model.blocks[0]
    block.gate.fc2.weight.data.fill_(-1.0)
    block.gate.bn.running_mean.fill_(0)
    block.gate.fc1.weight.data.abs_()
    x = torch.relu(torch.randn(2, 8, 34, 34))
    out, mask = block(x, "gated")
    assert mask.sum() == 0
    expected = torch.relu(block.bn2.gated(torch.zeros_like(x[:, : block.planes])) + x)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("arch,stem,size,feat", [("resnet18", "cifar", 32, 64), ("resnet34", "imagenet", 96, 64)])
def test_output_shapes(arch, stem, size, feat):
    model = GatedResNet(ModelConfig(arch=arch, stem=stem, width=0.125, input_size=size)).eval()
    out = model(torch.randn(2, 3, size, size), "gated")
    assert out.features.shape == (2, feat)
    assert len(out.masks) == sum(model.cfg.layers)
