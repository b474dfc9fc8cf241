"""The Torch-Pruning baseline: what a user would do instead of training gates.

A dense encoder (the `vicreg` checkpoint, or any checkpoint's dense path) is pruned with the
`torch-pruning` package itself: its dependency graph finds the groups (a block's conv1 output
channels, BN1 and conv2 input channels), its magnitude importance ranks the channels of each
group, and its pruner removes them. The residual streams (stem, conv2 outputs, shortcuts) are
left whole, so the result lives in the same space as gatekit's static graphs (a kept subset of
every block's inner channels) and exports through the same path. Widths are rounded like
gatekit's: up to a multiple of `round_to` (a block narrower than that keeps all its channels).

The pruned encoder is stored as a gatekit checkpoint of the original shape: the removed channels'
conv1 filters and conv2 input slices are zero, and the metadata's `pruned` record names the kept
channels per block, so the dense path computes exactly the pruned network and `gatekit export`
removes the channels physically. `gatekit train --init` fine-tunes it with the removed channels
held at zero (their gradients are masked), which trains exactly the pruned network.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from gatekit.errors import GatekitError
from gatekit.models import GatedResNet

IMPORTANCES = ("l2", "l1")
PRUNED_KEY = "pruned"  # checkpoint metadata: the record of a pruned encoder


class _DensePath(nn.Module):
    """The dense path as a plain module (what Torch-Pruning traces)."""

    def __init__(self, model: GatedResNet):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, "dense").features


def kept_width(planes: int, ratio: float, round_to: int) -> int:
    """gatekit's rounding: the kept channels rounded up to a multiple of round_to, at most planes."""
    keep = math.ceil(planes * (1.0 - ratio) / round_to) * round_to
    return min(planes, max(round_to, keep))


def prune(model: GatedResNet, ratio: float, round_to: int = 16, importance: str = "l2") -> tuple[GatedResNet, dict]:
    """Prunes `ratio` of every block's inner channels (rounded like gatekit's) by group magnitude.

    Returns the pruned encoder in the original shape (removed channels zeroed) and the `pruned` record.
    The result's dense path is checked against Torch-Pruning's pruned module before it is returned.
    """
    import torch_pruning as tp

    if not 0.0 <= ratio < 1.0:
        raise GatekitError(f"--ratio must lie in [0, 1), got {ratio}")
    if round_to < 1:
        raise GatekitError(f"--round-to must be at least 1, got {round_to}")
    if importance not in IMPORTANCES:
        raise GatekitError(f"--importance must be one of {', '.join(IMPORTANCES)}, got {importance!r}")
    model = model.eval()
    work = copy.deepcopy(model).eval()
    view = _DensePath(work)
    size = model.cfg.input_size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ignored = (
        [work.stem_conv]
        + [b.conv2 for b in work.blocks]
        + [b.downsample[0] for b in work.blocks if b.downsample is not None]
    )
    targets = {b.conv1: kept_width(b.planes, ratio, round_to) for b in work.blocks}
    ratios = {m: 1.0 - k / m.out_channels for m, k in targets.items()}
    p = {"l2": 2, "l1": 1}[importance]
    pruner = tp.pruner.MetaPruner(
        view,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=p),
        pruning_ratio=0.0,
        pruning_ratio_dict=ratios,
        ignored_layers=ignored,
        round_to=round_to,
    )
    index = {id(b.conv1): i for i, b in enumerate(work.blocks)}
    kept = [list(range(b.planes)) for b in work.blocks]
    for group in pruner.step(interactive=True):
        root = group[0].dep.target.module
        if id(root) not in index:
            raise GatekitError(
                f"Torch-Pruning proposed a group rooted outside the blocks' conv1 ({type(root).__name__})"
            )
        i = index[id(root)]
        removed = {int(c) for c in group[0].idxs}
        kept[i] = [c for c in kept[i] if c not in removed]
        group.prune()
    for b, ch in zip(work.blocks, kept):
        if b.conv1.out_channels != len(ch) or b.conv2.in_channels != len(ch):
            raise GatekitError("Torch-Pruning left a block's conv1 and conv2 out of step")
    out = with_channels(model, work, kept)
    with torch.no_grad():
        x = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(1))
        want, got = view(x), out(x, "dense").features
        err = float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))
    if err > 1e-5:
        raise GatekitError(f"the pruned checkpoint differs from Torch-Pruning's module (relative error {err:.2e})")
    record = {
        "tool": "torch-pruning",
        "version": tp.__version__,
        "importance": f"group magnitude L{p}",
        "scope": "per block (uniform ratio)",
        "ratio": ratio,
        "round_to": round_to,
        "widths": [len(c) for c in kept],
        "channels": kept,
        "check_relative_error": err,
    }
    return out, record


def with_channels(original: GatedResNet, pruned: GatedResNet, kept: list[list[int]]) -> GatedResNet:
    """The original-shape encoder that computes the pruned one on its dense path: kept channels carry the
    pruned module's weights, removed channels have zero conv1 filters and zero conv2 input slices."""
    out = copy.deepcopy(original).eval()
    with torch.no_grad():
        for dst, src, ch in zip(out.blocks, pruned.blocks, kept):
            idx = torch.tensor(ch, dtype=torch.long)
            dst.conv1.weight.zero_()
            dst.conv1.weight[idx] = src.conv1.weight
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst.bn1.dense, name)[idx] = getattr(src.bn1.dense, name)
            dst.conv2.weight.zero_()
            dst.conv2.weight[:, idx] = src.conv2.weight
            dst.bn2.dense.load_state_dict(src.bn2.dense.state_dict())
            if dst.downsample is not None:
                dst.downsample.load_state_dict(src.downsample.state_dict())
        out.stem_conv.load_state_dict(pruned.stem_conv.state_dict())
        out.stem_bn.load_state_dict(pruned.stem_bn.state_dict())
    return out


def removed_masks(model: GatedResNet, record: dict) -> list[torch.Tensor]:
    """Per block, a (planes,) float mask: 1 for a kept channel, 0 for a removed one."""
    channels = record.get("channels")
    if not isinstance(channels, list) or len(channels) != len(model.blocks):
        raise GatekitError(
            f"the checkpoint's '{PRUNED_KEY}' record needs 'channels' for each of its {len(model.blocks)} blocks"
        )
    masks = []
    for b, ch in zip(model.blocks, channels):
        m = torch.zeros(b.planes)
        m[torch.tensor(ch, dtype=torch.long)] = 1.0
        masks.append(m)
    return masks


def hold_removed_at_zero(model: GatedResNet, record: dict) -> list:
    """Fine-tuning a pruned checkpoint: zeroes the removed channels' weights and masks their gradients,
    so the optimiser (weight decay and LARS's norms included) sees exactly the pruned network. Returns the
    hook handles."""
    handles = []
    for b, m in zip(model.blocks, removed_masks(model, record)):
        rows, cols = m.view(-1, 1, 1, 1), m.view(1, -1, 1, 1)
        with torch.no_grad():
            b.conv1.weight.mul_(rows.to(b.conv1.weight))
            b.conv2.weight.mul_(cols.to(b.conv2.weight))
        handles.append(b.conv1.weight.register_hook(lambda g, r=rows: g * r.to(g)))
        handles.append(b.conv2.weight.register_hook(lambda g, c=cols: g * c.to(g)))
    return handles
