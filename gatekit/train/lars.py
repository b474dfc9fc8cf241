"""LARS as the paper uses it: SGD with momentum wrapped in LARS (solo-learn's form, docs/method.md section 6).

For each parameter with ndim != 1 (and not excluded):
    g <- (g + wd w) * min(eta ||w|| / (||g|| + wd ||w|| + eps) / lr, 1)      (clipped LARS)
1-D parameters (BN gamma/beta, biases) get neither the LARS scaling nor weight decay. Then a plain
momentum-SGD step: buf <- momentum buf + g; w <- w - lr buf.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        eta: float = 0.02,
        clip: bool = True,
        exclude_bias_n_norm: bool = True,
        eps: float = 1e-8,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            clip=clip,
            exclude_bias_n_norm=exclude_bias_n_norm,
            eps=eps,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eta = group["lr"], group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if p.ndim != 1 or not group["exclude_bias_n_norm"]:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    if w_norm > 0 and g_norm > 0:
                        trust = eta * w_norm / (g_norm + wd * w_norm + group["eps"])
                        if group["clip"]:
                            trust = torch.clamp(trust / lr, max=1.0)
                        g = (g + wd * p) * trust
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.detach().clone()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-lr)
        return loss


def parameter_groups(model: torch.nn.Module, weight_decay: float, gate_lr_mult: float = 1.0) -> list[dict]:
    """Gate parameters (the paper's "mask" names) get no weight decay; 1-D parameters get none via LARS.
    Each group's `lr_mult` scales the scheduled learning rate (the gates' is `gate_lr_mult`, 1 in the paper)."""
    gate, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (gate if ".gate." in f".{name}" else rest).append(p)
    return [
        {"params": rest, "weight_decay": weight_decay, "lr_mult": 1.0},
        {"params": gate, "weight_decay": 0.0, "lr_mult": float(gate_lr_mult)},
    ]


def warmup_cosine(epoch: float, *, base_lr: float, warmup_epochs: float, total_epochs: float, start_lr: float) -> float:
    """Linear warm-up from start_lr to base_lr over warmup_epochs, then cosine to 0 at total_epochs."""
    import math

    if warmup_epochs > 0 and epoch < warmup_epochs:
        return start_lr + (base_lr - start_lr) * epoch / warmup_epochs
    span = max(total_epochs - warmup_epochs, 1e-8)
    progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
