"""Weighted k-nearest-neighbour classification on frozen features.

Two variants:
- "cosine": features are L2-normalised, similarity s = cos(a, b), the k most similar training
  samples vote with weight exp(s / temperature) (InstDisc / DINO weighted k-NN; k=20, T=0.07).
- "euclidean": distance d = ||a - b||_2, the k nearest vote with weight 1 / (d + 1e-5)
  (solo-learn's k-NN, which the paper reports with k=1).
The votes are summed per class and the arg-max is the prediction (ties go to the lower class
index). Test rows are processed in chunks of `chunk`, so memory is `chunk x N_train` floats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatekit.errors import GatekitError

METRICS = ("cosine", "euclidean")
EUCLIDEAN_EPS = 1e-5


def _as_features(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise GatekitError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
    return t.float()


def _as_labels(y, n: int, num_classes: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(y).long().flatten()
    if t.numel() != n:
        raise GatekitError(f"{name} has {t.numel()} labels for {n} samples")
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise GatekitError(f"{name} must lie in [0, {num_classes}), got [{int(t.min())}, {int(t.max())}]")
    return t


def knn_predict(
    train_feats,
    train_labels,
    test_feats,
    *,
    k: int,
    metric: str,
    num_classes: int,
    temperature: float = 0.07,
    chunk: int = 1000,
) -> torch.Tensor:
    """Predicted class of every test row, shape (N_test,) int64 on the cpu.

    Runs on the device of `train_feats` (test rows are moved there chunk by chunk).
    """
    if metric not in METRICS:
        raise GatekitError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if k < 1:
        raise GatekitError(f"k must be >= 1, got {k}")
    if num_classes < 1:
        raise GatekitError(f"num_classes must be >= 1, got {num_classes}")
    if temperature <= 0:
        raise GatekitError(f"temperature must be > 0, got {temperature}")
    if chunk < 1:
        raise GatekitError(f"chunk must be >= 1, got {chunk}")
    train = _as_features(train_feats, "train_feats")
    test = _as_features(test_feats, "test_feats")
    if train.shape[0] == 0:
        raise GatekitError("k-NN needs at least one training sample")
    if train.shape[1] != test.shape[1]:
        raise GatekitError(f"train and test features differ in dimension: {train.shape[1]} vs {test.shape[1]}")
    labels = _as_labels(train_labels, train.shape[0], num_classes, "train_labels").to(train.device)
    k = min(k, train.shape[0])
    if metric == "cosine":
        train = F.normalize(train, dim=1)

    preds: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, test.shape[0], chunk):
            q = test[start : start + chunk].to(train.device)
            if metric == "cosine":
                sim = F.normalize(q, dim=1) @ train.T
                top, idx = sim.topk(k, dim=1, largest=True, sorted=True)
                # exp((s - s_max) / T): the same vote up to a per-row factor, without overflow
                weight = torch.exp((top - top[:, :1]) / temperature)
            else:
                dist = torch.cdist(q, train)
                top, idx = dist.topk(k, dim=1, largest=False, sorted=True)
                weight = 1.0 / (top + EUCLIDEAN_EPS)
            votes = torch.zeros(q.shape[0], num_classes, dtype=weight.dtype, device=weight.device)
            votes.scatter_add_(1, labels[idx], weight)
            preds.append(votes.argmax(dim=1).cpu())
    if not preds:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(preds)


def knn_accuracy(
    train_feats,
    train_labels,
    test_feats,
    test_labels,
    *,
    k: int,
    metric: str,
    num_classes: int,
    temperature: float = 0.07,
    chunk: int = 1000,
) -> float:
    """Top-1 accuracy in [0, 1] of `knn_predict` against `test_labels`."""
    pred = knn_predict(
        train_feats,
        train_labels,
        test_feats,
        k=k,
        metric=metric,
        num_classes=num_classes,
        temperature=temperature,
        chunk=chunk,
    )
    if pred.numel() == 0:
        raise GatekitError("k-NN accuracy needs at least one test sample")
    target = _as_labels(test_labels, pred.numel(), num_classes, "test_labels")
    return float((pred == target).double().mean())
