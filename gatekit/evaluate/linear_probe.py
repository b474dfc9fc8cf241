"""A linear probe on frozen, precomputed features.

Setting (recorded in `ProbeResult.settings` and in every saved probe):
- features are standardised with the training set's per-dimension mean and std (dimensions with
  std < 1e-6 are only centred);
- one `nn.Linear(D, K)` is trained, from zero initialisation, by full-batch L-BFGS (strong-Wolfe
  line search, `max_iter` iterations, at most 1.25 x max_iter loss evaluations) on the mean
  cross-entropy plus an L2 penalty `weight_decay / 2 * ||W||^2` on the weight (not the bias).
  The default 1e-4 is a small sanity regulariser: it keeps the problem strictly convex (the
  optimum is unique and finite even on separable data) without changing accuracy noticeably.
  Zero initialisation and full batches make the result deterministic (no seed is involved).
This is cheap (seconds for 50k x 512 features on a cpu) and differs from the paper's probe, which
trains a linear classifier for 100 epochs with SGD on augmented random crops through the frozen
encoder; numbers from the two protocols are close but not identical.

The returned weight and bias are folded: `logits = raw_features @ weight.T + bias`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gatekit.atomic import atomic_path
from gatekit.errors import GatekitError

PROBE_FORMAT = "gatekit-linear-probe/1"
STD_EPS = 1e-6


@dataclass
class ProbeResult:
    """A trained probe; `weight`/`bias` act on raw (unstandardised) features."""

    accuracy: float  # test top-1 in [0, 1]
    train_accuracy: float
    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)
    feature_mean: torch.Tensor  # (D,)
    feature_std: torch.Tensor  # (D,)
    settings: dict = field(default_factory=dict)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits of raw features (N, D) -> (N, K)."""
        return features.float() @ self.weight.T + self.bias

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).argmax(dim=1)


def _check(feats, labels, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(feats).float()
    y = torch.as_tensor(labels).long().flatten()
    if x.ndim != 2:
        raise GatekitError(f"{name} features must have shape (N, D), got {tuple(x.shape)}")
    if x.shape[0] != y.numel():
        raise GatekitError(f"{name}: {x.shape[0]} feature rows but {y.numel()} labels")
    if x.shape[0] == 0:
        raise GatekitError(f"{name}: no samples")
    if int(y.min()) < 0:
        raise GatekitError(f"{name}: negative label {int(y.min())}")
    return x, y


def train_linear_probe(
    train_feats,
    train_labels,
    test_feats,
    test_labels,
    *,
    num_classes: int | None = None,
    max_iter: int = 200,
    weight_decay: float = 1e-4,
    device: str | torch.device = "cpu",
) -> ProbeResult:
    """Fits the probe on (train_feats, train_labels) and reports its accuracy on the test set."""
    x_tr, y_tr = _check(train_feats, train_labels, "train")
    x_te, y_te = _check(test_feats, test_labels, "test")
    if x_tr.shape[1] != x_te.shape[1]:
        raise GatekitError(f"train and test features differ in dimension: {x_tr.shape[1]} vs {x_te.shape[1]}")
    k = num_classes if num_classes is not None else int(max(y_tr.max(), y_te.max())) + 1
    if int(max(y_tr.max(), y_te.max())) >= k:
        raise GatekitError(f"labels reach {int(max(y_tr.max(), y_te.max()))} but num_classes is {k}")
    if max_iter < 1 or weight_decay < 0:
        raise GatekitError(f"need max_iter >= 1 and weight_decay >= 0, got {max_iter} and {weight_decay}")
    dev = torch.device(device)
    d = x_tr.shape[1]

    # inference_mode(False): features extracted under inference mode must not leak into autograd
    with torch.inference_mode(False), torch.enable_grad():
        x_tr, y_tr = x_tr.to(dev).clone(), y_tr.to(dev).clone()
        mean = x_tr.mean(dim=0)
        std = x_tr.std(dim=0, correction=0)
        std = torch.where(std < STD_EPS, torch.ones_like(std), std)
        z_tr = (x_tr - mean) / std

        linear = nn.Linear(d, k).to(dev)
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        opt = torch.optim.LBFGS(
            linear.parameters(),
            lr=1.0,
            max_iter=max_iter,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-7,
            tolerance_change=1e-9,
            history_size=20,
        )

        def objective() -> torch.Tensor:
            return F.cross_entropy(linear(z_tr), y_tr) + 0.5 * weight_decay * linear.weight.pow(2).sum()

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            final_loss = float(objective())
            w = linear.weight.detach() / std  # fold the standardisation into the layer
            b = linear.bias.detach() - w @ mean
            train_acc = float((linear(z_tr).argmax(dim=1) == y_tr).double().mean())
            test_pred = (x_te.to(dev) @ w.T + b).argmax(dim=1)
            test_acc = float((test_pred == y_te.to(dev)).double().mean())
        iterations = int(opt.state[linear.weight].get("n_iter", 0))

    settings = {
        "protocol": "frozen precomputed features, no augmentation",
        "standardize": "train mean/std",
        "optimizer": "lbfgs",
        "line_search": "strong_wolfe",
        "max_iter": max_iter,
        "history_size": 20,
        "iterations": iterations,
        "weight_decay": weight_decay,
        "init": "zeros",
        "final_loss": final_loss,
        "n_train": int(x_tr.shape[0]),
        "n_test": int(x_te.shape[0]),
        "feature_dim": d,
        "num_classes": k,
    }
    return ProbeResult(test_acc, train_acc, w.cpu(), b.cpu(), mean.detach().cpu(), std.cpu(), settings)


def save_probe(result: ProbeResult, path: str | os.PathLike) -> None:
    """Writes the probe as safetensors (weight, bias, feature_mean, feature_std), atomically."""
    from safetensors.torch import save_file

    tensors = {
        "weight": result.weight.detach().float().cpu().contiguous(),
        "bias": result.bias.detach().float().cpu().contiguous(),
        "feature_mean": result.feature_mean.detach().float().cpu().contiguous(),
        "feature_std": result.feature_std.detach().float().cpu().contiguous(),
    }
    meta = {
        "format": PROBE_FORMAT,
        "settings": json.dumps(result.settings),
        "accuracy": json.dumps(result.accuracy),
        "train_accuracy": json.dumps(result.train_accuracy),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_probe(path: str | os.PathLike) -> ProbeResult:
    """Reads a probe written by `save_probe`; a missing or corrupt file raises GatekitError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    file = Path(path)
    if not file.is_file():
        raise GatekitError(f"no linear probe at {file}")
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GatekitError(f"corrupt linear probe {file}: {first}") from None
    missing = {"weight", "bias", "feature_mean", "feature_std"} - set(tensors)
    if meta.get("format") != PROBE_FORMAT or missing:
        raise GatekitError(
            f"{file} is not a gatekit linear probe (format {meta.get('format')!r}, missing {sorted(missing)})"
        )
    try:
        settings = json.loads(meta["settings"])
        accuracy = float(json.loads(meta["accuracy"]))
        train_accuracy = float(json.loads(meta["train_accuracy"]))
    except (KeyError, ValueError, TypeError) as e:
        raise GatekitError(f"corrupt linear probe {file}: bad metadata ({e})") from None
    w, b = tensors["weight"], tensors["bias"]
    if w.ndim != 2 or b.shape != (w.shape[0],) or tensors["feature_mean"].shape != (w.shape[1],):
        raise GatekitError(f"corrupt linear probe {file}: inconsistent tensor shapes")
    return ProbeResult(accuracy, train_accuracy, w, b, tensors["feature_mean"], tensors["feature_std"], settings)
