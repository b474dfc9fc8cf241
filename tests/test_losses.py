import math

import pytest
import torch

from gatekit.models.flops import BlockCost, CostModel
from gatekit.train.lars import LARS, warmup_cosine
from gatekit.train.losses import bound_anneal, budget_loss, vicreg_loss


def test_vicreg_against_hand_computed_value():
    z1 = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    z2 = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    out = vicreg_loss(z1, z2)
    # invariance: mean of squared differences = 4 / 4
    assert out["invariance"].item() == pytest.approx(1.0)
    # variance: only z2's second column is below std 1: relu(1 - sqrt(0 + 1e-4)) / 2 dims
    assert out["variance"].item() == pytest.approx(0.99 / 2, abs=1e-6)
    # covariance: z1's covariance [[2, 2], [2, 2]] -> (2^2 + 2^2) / 2 dims; z2's off-diagonal is 0
    assert out["covariance"].item() == pytest.approx(4.0)
    assert out["loss"].item() == pytest.approx(25 * 1.0 + 25 * 0.495 + 4.0, abs=1e-4)


def _toy_cost() -> CostModel:
    # block a: 9 * 1 * (2 + 4) = 54 MACs per channel, 4 channels, no shortcut conv
    # block b: 9 * 1 * (4 + 4) = 72 MACs per channel, 4 channels, shortcut 1 * 4 * 4 = 16
    return CostModel(100, (BlockCost("a", 2, 4, 1, False, 10), BlockCost("b", 4, 4, 1, True, 10)))


def test_budget_loss_against_hand_computed_value():
    cost = _toy_cost()
    assert cost.dense_macs == 100 + 216 + 304
    active = torch.tensor([[2.0, 4.0], [0.0, 2.0]])  # batch mean: 1 and 3 channels
    out = budget_loss(active, cost, target=0.25, p=1.0)
    real = 100 + 20 + 54 * 1 + 72 * 3 + 16  # stem + gates + blocks at the mean width = 406
    assert out["flops_ratio"].item() == pytest.approx(406 / 620)
    assert out["flops_loss"].item() == pytest.approx(5 * (406 / 620 - 0.25) ** 2)
    # p = 1: both bounds are sqrt(0.25) = 0.5; densities 0.25 and 0.75 are each 0.25 away
    assert out["bound_loss"].item() == pytest.approx(0.0625)
    assert out["loss"].item() == pytest.approx(5 * (real / 620 - 0.25) ** 2 + 0.0625)


def test_budget_bounds_relax_with_the_epoch():
    cost = _toy_cost()
    active = torch.tensor([[2.0, 4.0], [0.0, 2.0]])
    p = bound_anneal(10, 0.02)
    assert p == pytest.approx(0.81873, abs=1e-5)
    out = budget_loss(active, cost, target=0.25, p=p)
    lower, upper = 0.5 * p, 1 - 0.5 * p
    assert out["bound_loss"].item() == pytest.approx(((lower - 0.25) ** 2 + (0.75 - upper) ** 2) / 2)
    inside = torch.tensor([[2.0, 2.0], [2.0, 2.0]])  # densities 0.5: inside both bounds
    assert budget_loss(inside, cost, 0.25, p)["bound_loss"].item() == 0.0


def test_budget_loss_gradient_pushes_active_channels_down_when_over_budget():
    active = torch.tensor([[4.0, 4.0]], requires_grad=True)
    budget_loss(active, _toy_cost(), target=0.25, p=0.0)["loss"].backward()
    assert (active.grad > 0).all()


def test_lars_update_against_hand_computation():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # norm 5
    b = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = LARS([{"params": [w, b], "weight_decay": 0.1}], lr=0.5, eta=0.02, momentum=0.9)
    w.grad = torch.tensor([[0.0, 1.0]])  # norm 1
    b.grad = torch.tensor([1.0, -1.0])
    opt.step()
    trust = min(0.02 * 5 / (1 + 0.1 * 5 + 1e-8) / 0.5, 1.0)
    g = (torch.tensor([[0.0, 1.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])) * trust
    assert torch.allclose(w.data, torch.tensor([[3.0, 4.0]]) - 0.5 * g)
    assert torch.allclose(b.data, torch.tensor([0.5, 1.5]))  # 1-D: plain SGD, no decay, no LARS


def test_warmup_cosine_schedule():
    kw = dict(base_lr=0.6, warmup_epochs=10, total_epochs=500, start_lr=0.003)
    assert warmup_cosine(0, **kw) == pytest.approx(0.003)
    assert warmup_cosine(5, **kw) == pytest.approx(0.003 + 0.597 / 2)
    assert warmup_cosine(10, **kw) == pytest.approx(0.6)
    assert warmup_cosine(255, **kw) == pytest.approx(0.3)
    assert warmup_cosine(500, **kw) == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(warmup_cosine(600, **kw))


def test_local_views_weight_global_and_local_terms_as_tan_et_al():
    from gatekit.models import ModelConfig
    from gatekit.train.losses import active_channels
    from gatekit.train.methods import LossConfig, SSLModel

    torch.manual_seed(0)
    model = SSLModel(ModelConfig(width=0.125), "vicreg-dual", LossConfig(budget=0.3), 32, 32).eval()
    v1, v2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    locals_ = [torch.randn(8, 3, 18, 18), torch.randn(8, 3, 18, 18)]
    with torch.no_grad():
        out = model(v1, v2, 1.0, locals_)
        g = model.backbone(v1, "gated")
        z1, z2 = model.projector(g.features), model.projector(model.backbone(v2, "dense").features)
        gg = vicreg_loss(z1, z2)["loss"]
        gl = [vicreg_loss(model.projector(model.backbone(lv, "gated").features), z2)["loss"] for lv in locals_]
        budget = budget_loss(active_channels(g.masks), model.cost, 0.3, 1.0)["loss"]
        plain = model(v1, v2, 1.0)
    assert out["loss"].item() == pytest.approx((0.4 * gg + 0.6 * (gl[0] + gl[1]) / 2 + budget).item(), rel=1e-5)
    assert plain["loss"].item() == pytest.approx((gg + budget).item(), rel=1e-5)
