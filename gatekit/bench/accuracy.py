"""Accuracy of an artifact measured on its own outputs, in its runtime (numpy only: runs on the device).

The artifact embeds the training images (the memory / probe set) and the test images of its dataset,
normalised as its manifest says, one batch of the artifact's size at a time. On those features:
- k-NN top-1: k = 20, cosine similarity, votes weighted exp(s / 0.07) (the protocol of
  gatekit.evaluate.knn, reimplemented here without torch; ties go to the lower class index);
- linear probe: features standardised with the training set's mean and std, a multinomial logistic
  regression from zero initialisation, full-batch L-BFGS (history 20, backtracking Armijo line search,
  at most `max_iter` iterations) on the mean cross-entropy plus weight_decay / 2 * ||W||^2 (the
  setting of gatekit.evaluate.linear_probe; the two optimisers reach the same convex optimum).
"""

from __future__ import annotations

import time

import numpy as np

from gatekit.errors import GatekitError

SCHEMA = "gatekit.accuracy/1"
KNN_K = 20
KNN_T = 0.07
STD_EPS = 1e-6


def knn_predict(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_T,
    chunk: int = 500,
) -> np.ndarray:
    """Weighted cosine k-NN: the predicted class of every test row."""
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise GatekitError(f"k-NN needs (N, D) features of one dimension, got {train.shape} and {test.shape}")
    if len(train) == 0:
        raise GatekitError("k-NN needs at least one training sample")
    k = min(k, len(train))

    def unit(x):
        x = x.astype(np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    memory, labels = unit(train), np.asarray(train_labels, dtype=np.int64)
    out = np.empty(len(test), dtype=np.int64)
    for s in range(0, len(test), chunk):
        sim = unit(test[s : s + chunk]) @ memory.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        top, idx = np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)
        weight = np.exp((top - top[:, :1]) / temperature)
        votes = np.zeros((len(top), num_classes))
        np.add.at(votes, (np.arange(len(top))[:, None], labels[idx]), weight)
        out[s : s + chunk] = votes.argmax(axis=1)
    return out


def knn_accuracy(train, train_labels, test, test_labels, num_classes: int, k: int = KNN_K) -> float:
    pred = knn_predict(train, train_labels, test, num_classes, k)
    return float((pred == np.asarray(test_labels)).mean())


def _softmax_loss(theta: np.ndarray, z: np.ndarray, y: np.ndarray, k: int, wd: float) -> tuple[float, np.ndarray]:
    n, d = z.shape
    w, b = theta[: k * d].reshape(k, d), theta[k * d :]
    logits = z @ w.T + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    s = p.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - logits[np.arange(n), y])) + 0.5 * wd * float((w * w).sum())
    p /= s
    p[np.arange(n), y] -= 1.0
    gw = p.T @ z / n + wd * w
    gb = p.sum(axis=0) / n
    return loss, np.concatenate([gw.ravel(), gb])


def _lbfgs(
    fun, x0: np.ndarray, max_iter: int, history: int = 20, tol_grad: float = 1e-7, tol_change: float = 1e-9
) -> tuple[np.ndarray, float, int]:
    x = x0.copy()
    f, g = fun(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    it = 0  # iterations run, returned
    while it < max_iter:
        it += 1
        if np.abs(g).max() <= tol_grad:
            break
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_hist), reversed(y_hist)):
            a = s @ q / (y @ s)
            alphas.append(a)
            q -= a * y
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        else:
            q *= min(1.0, 1.0 / np.abs(g).sum())
        for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s * (a - (y @ q) / (y @ s))
        direction = -q
        slope = g @ direction
        if slope >= 0:  # not a descent direction: restart from the gradient
            s_hist, y_hist = [], []
            direction, slope = -g, -(g @ g)
        step = 1.0
        while True:
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if y @ s > 1e-10:
            s_hist.append(s)
            y_hist.append(y)
            if len(s_hist) > history:
                s_hist.pop(0)
                y_hist.pop(0)
        change = abs(f_new - f)
        x, f, g = x_new, f_new, g_new
        if change < tol_change:
            break
    return x, f, it


def linear_probe(
    train, train_labels, test, test_labels, num_classes: int, max_iter: int = 200, weight_decay: float = 1e-4
) -> dict:
    """Top-1 of a linear probe fitted on the training features (see the module docstring)."""
    x = np.asarray(train, dtype=np.float64)
    y = np.asarray(train_labels, dtype=np.int64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < STD_EPS, 1.0, std)
    z = (x - mean) / std
    k, d = num_classes, z.shape[1]
    theta, loss, iters = _lbfgs(lambda t: _softmax_loss(t, z, y, k, weight_decay), np.zeros(k * d + k), max_iter)
    w, b = theta[: k * d].reshape(k, d), theta[k * d :]
    pred = ((np.asarray(test, dtype=np.float64) - mean) / std) @ w.T + b
    return {
        "top1": float((pred.argmax(axis=1) == np.asarray(test_labels)).mean()),
        "train_top1": float(((z @ w.T + b).argmax(axis=1) == y).mean()),
        "settings": {
            "standardize": "train mean/std",
            "optimizer": "lbfgs (numpy)",
            "max_iter": max_iter,
            "iterations": iters,
            "history_size": 20,
            "weight_decay": weight_decay,
            "init": "zeros",
            "final_loss": loss,
        },
    }


def artifact_features(session, images: np.ndarray, batch: int) -> np.ndarray:
    """The artifact's outputs for normalised images, `batch` at a time (the tail that does not fill a batch
    is left out)."""
    n = len(images) - len(images) % batch
    if n == 0:
        raise GatekitError(f"fewer images ({len(images)}) than one batch of {batch}")
    return np.concatenate(
        [np.asarray(session.run(images[i : i + batch])).reshape(batch, -1) for i in range(0, n, batch)]
    )


def measure_accuracy(
    artifact,
    runtime: str | None = None,
    *,
    threads: int | None = None,
    ops: str = "auto",
    train_images: int | None = None,
    test_images: int | None = None,
    data_dir: str | None = None,
    linear: bool = True,
    progress=None,
) -> dict:
    """k-NN top-1 (and the linear probe) of `artifact` (an Artifact) on its own outputs in `runtime`."""
    from gatekit.bench.run import manifest_summary
    from gatekit.data import load_dataset
    from gatekit.data.arrays import normalize_images, recorded_dir
    from gatekit.runtimes import load_artifact

    m = artifact.manifest
    spec = m["input"]
    root = data_dir or recorded_dir(spec.get("data_dir"))
    size = spec["shape"][-1]
    sets = {}
    for split, limit in (("train", train_images), ("test", test_images)):
        data = load_dataset(spec["dataset"], split, root, limit=limit, image_size=size)
        sets[split] = (data.images, np.asarray(data.labels, dtype=np.int64))
    runtime = runtime or artifact.runtime
    t0 = time.perf_counter()
    with load_artifact(artifact, runtime, ops=ops, threads=threads, precision=m.get("precision", "fp32")) as session:
        fixed = session.input_shape[0]
        batch = fixed if fixed > 0 else 256
        feats, labels = {}, {}
        for split, (images, y) in sets.items():
            chunks = []
            step = max(batch, 2048 - 2048 % batch)
            for s in range(0, len(images) - len(images) % batch, step):
                x = normalize_images(images[s : s + step], spec["mean"], spec["std"], spec["scale"])
                chunks.append(artifact_features(session, x, batch))
                if progress:
                    progress(split, s + len(x), len(images))
            feats[split], labels[split] = np.concatenate(chunks), y[: sum(len(c) for c in chunks)]
        info = session.info.to_dict()
    embed_s = time.perf_counter() - t0
    classes = int(max(labels["train"].max(), labels["test"].max())) + 1
    record = {
        "schema": SCHEMA,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": str(artifact.path_for(runtime)),
        "manifest_path": str(artifact.manifest_path),
        "manifest": manifest_summary(m, info.get("ops")),
        "runtime": info,
        "dataset": spec["dataset"],
        "train_images": len(feats["train"]),
        "test_images": len(feats["test"]),
        "knn": {
            "k": KNN_K,
            "metric": "cosine",
            "temperature": KNN_T,
            "top1": knn_accuracy(feats["train"], labels["train"], feats["test"], labels["test"], classes),
        },
        "embed_seconds": round(embed_s, 1),
    }
    if linear:
        record["linear"] = linear_probe(feats["train"], labels["train"], feats["test"], labels["test"], classes)
    return record
