"""How an export checks its graph against the PyTorch path it stands for, before anything is written.

- Before tracing: the deploy module must equal its reference path (dense: the dense path; hybrid and dynamic: the
  gated path) within 1e-4; a static module, an approximation by design, reports its feature cosine to the gated
  path instead (`torch_check`).
- In the runtime, fp32: the artifact must equal the reference on held-out images at every batch it takes
  (`verify`). Reduced precision: its features' cosine to the fp32 graph's and its k-NN top-1 beside theirs, refused
  past --min-cosine and --max-knn-drop (`verify_reduced`, `knn_of`).
- A static graph's k-NN top-1 beside the gated path's on the test set, reported in its manifest
  (`static_agreement`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from gatekit.data import load_dataset
from gatekit.data.arrays import normalize_images
from gatekit.errors import GatekitError
from gatekit.export.graphs import build_graph
from gatekit.runtimes.verify import check, relative_error, run_batched

if TYPE_CHECKING:
    from gatekit.export.exporter import Prepared


def reference(prep: Prepared, x: np.ndarray) -> np.ndarray:
    """The PyTorch path the graph must equal (static: its own module)."""
    t = torch.from_numpy(x)
    with torch.inference_mode():
        if prep.opts.graph == "static":
            return prep.graphs.net(t).numpy()
        path = "dense" if prep.opts.graph == "dense" else "gated"
        f = prep.model(t, path).features
        return (f if prep.head is None else prep.head(f)).numpy()


def reference_batched(prep: Prepared, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([reference(prep, x[i : i + batch]) for i in range(0, len(x), batch)])


def gated_reference(prep: Prepared, x: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        f = prep.model(torch.from_numpy(x), "gated").features
        return f if prep.head is None else prep.head(f)


def torch_check(prep: Prepared, form: str | None = None, precision: str = "fp32") -> dict:
    """Checks the deploy module of a form against the reference path before any export. int8 dynamic: its fp32
    twin (the same used channels, float weights) must equal the gated path; the int8 graph itself is checked
    in its runtime against the fp32 gated graph (cosine, k-NN)."""
    opts = prep.opts
    if opts.graph == "dynamic" and precision == "int8":
        return {"fp32_" + k: v for k, v in torch_check(prep, "native").items()}
    net, spec = prep.graphs.graph(form)  # built outside inference mode: the exporter traces it afterwards
    with torch.inference_mode():
        out = net(torch.from_numpy(prep.verify_images))
    if opts.graph == "static":  # an approximation by design: report its agreement
        cos = torch.nn.functional.cosine_similarity(out, gated_reference(prep, prep.verify_images), dim=1)
        return {"cosine_to_gated": {"mean": float(cos.mean()), "min": float(cos.min())}}
    err = relative_error(out.numpy(), reference(prep, prep.verify_images))
    if err > 1e-4:
        hint = ""
        if spec.channels:  # hybrid, native dynamic: channels unused over the calibration images were removed
            n = images_using_removed_channels(prep, spec)
            hint = (
                f": {n} of {len(prep.verify_images)} held-out images turn on channels that were on for at most "
                f"--min-usage {opts.min_usage} of the {prep.usage.images} calibration images; raise --calib"
                + (" or lower --min-usage" if opts.graph == "hybrid" else "")
            )
        raise GatekitError(
            f"the {opts.graph} graph{f' ({form})' if form else ''} differs from the PyTorch path by "
            f"{err:.3g}{hint}; not exported"
        )
    return {"torch_module_relative_error": err}


def images_using_removed_channels(prep: Prepared, spec) -> int:
    """How many verification images turn on a channel the graph removed."""
    with torch.inference_mode():
        masks = prep.model(torch.from_numpy(prep.verify_images), "gated").masks
    hit = torch.zeros(len(prep.verify_images), dtype=torch.bool)
    for mask, kept in zip(masks, spec.channels, strict=True):
        removed = torch.ones(mask.shape[1], dtype=torch.bool)
        removed[kept] = False
        hit |= mask[:, removed].bool().any(dim=1)
    return int(hit.sum())


def knn_of(prep: Prepared, features) -> dict:
    """k-NN top-1 (k=20, cosine) of `features(images)` against the fp32 graph's, on --knn-train training
    images as memory and --knn-test test images: one protocol for every reduced-precision artifact. The images
    and the fp32 graph's features are computed once per Prepared (`prep.knn_sets`)."""
    from gatekit.evaluate.knn import knn_accuracy

    opts = prep.opts
    size = prep.model.cfg.input_size
    if prep.knn_sets is None:
        train = load_dataset(prep.dataset, "train", prep.data_root, limit=opts.knn_train, image_size=size)
        test = load_dataset(prep.dataset, "test", prep.data_root, limit=opts.knn_test, image_size=size)
        sets = [normalize_images(d.images, prep.mean, prep.std) for d in (train, test)]
        labels = [torch.as_tensor(d.labels).long() for d in (train, test)]
        fp32 = [reference_batched(prep, x) for x in sets]
        prep.knn_sets = (sets, labels, fp32)
    sets, labels, fp32 = prep.knn_sets
    k = int(max(labels[0].max(), labels[1].max())) + 1

    def acc(feats):  # a graph of fixed batch b sees the first multiple of b images of each set
        train, test = (torch.as_tensor(np.asarray(f)) for f in feats)
        return knn_accuracy(
            train, labels[0][: len(train)], test, labels[1][: len(test)], k=20, metric="cosine", num_classes=k
        )

    b = opts.batch
    base = acc(fp32)
    mine = acc([features(x[: len(x) - len(x) % b]) for x in sets])
    return {
        "knn20": mine,
        "knn20_fp32": base,
        "knn_delta_points": 100 * (mine - base),
        "knn_train_images": int(len(sets[0])),
        "knn_test_images": int(len(sets[1])),
    }


def batch_sizes(prep: Prepared) -> list[int]:
    """The batches an artifact is run at: its own, and 8 for a dynamic-batch graph."""
    return [prep.opts.batch] + ([8] if prep.opts.dynamic_batch and prep.opts.batch != 8 else [])


def verify(prep: Prepared, session, name: str, precision: str) -> dict:
    """fp32: the artifact's outputs against the reference path's at every batch it takes; refuses past the
    tolerance (gatekit.runtimes.verify.check)."""
    errors = {}
    for b in batch_sizes(prep):
        actual = run_batched(session, prep.verify_images, b)
        errors[f"batch{b}"] = check(
            f"{name} at batch {b}", actual, reference(prep, prep.verify_images[: len(actual)]), precision
        )
    return errors


def verify_reduced(prep: Prepared, session, name: str, precision: str) -> dict:
    """Reduced precision cannot match fp32 elementwise: the artifact's features against the fp32 graph's
    (its PyTorch module, equal to the fp32 artifact within 1e-4) on held-out real images (cosine), and
    the k-NN top-1 of its own features against theirs. Refuses, saying by how much, past the thresholds."""
    from gatekit.runtimes.quantize import cosine

    opts = prep.opts
    errors, outputs = {}, {}
    for b in batch_sizes(prep):
        outputs[b] = run_batched(session, prep.verify_images, b)
        errors[f"batch{b}"] = relative_error(outputs[b], reference(prep, prep.verify_images[: len(outputs[b])]))
    actual = outputs[opts.batch]
    cos = cosine(actual, reference(prep, prep.verify_images[: len(actual)]))
    knn = knn_of(prep, lambda x: run_batched(session, x, opts.batch))
    report = {
        "relative_error": errors,
        "cosine_to_fp32": {"mean": float(cos.mean()), "min": float(cos.min()), "images": int(len(cos))},
        **knn,
        "thresholds": {"min_mean_cosine": opts.min_cosine, "max_knn_drop_points": opts.max_knn_drop},
    }
    drop = -knn["knn_delta_points"]
    problems = []
    if cos.mean() < opts.min_cosine:
        problems.append(
            f"mean feature cosine to fp32 {cos.mean():.4f} (min {cos.min():.3f}) is below {opts.min_cosine}"
        )
    if drop > opts.max_knn_drop + 1e-9:  # a drop of exactly the threshold passes (100 * (a - b) rounds up to it)
        problems.append(
            f"k-NN top-1 {100 * knn['knn20']:.2f}% is {drop:.2f} points below fp32's {100 * knn['knn20_fp32']:.2f}%"
        )
    if problems:
        hint = (
            "use fp32 for this graph"
            if precision != "int8"
            else "keep blocks in float (--quant-exclude last or blockN) or calibrate on more images (--quant-calib)"
            if opts.graph == "dynamic"
            else "keep parts in float (--quant-exclude stem,last) or calibrate on more images (--quant-calib)"
        )
        raise GatekitError(f"{name} {precision}: {'; '.join(problems)}; not written: {hint}")
    return report


def static_agreement(prep: Prepared, progress: bool) -> dict:
    """k-NN top-1 (k=20, cosine) of the static graph beside the gated path, on the test set.

    When the static graph is more than 1 point off and --min-usage is above 0, lower values are
    tried (halving, then 0) and the largest one that closes the gap is reported.
    """
    from gatekit.evaluate.features import extract_features
    from gatekit.evaluate.knn import knn_accuracy

    size = prep.model.cfg.input_size
    train = load_dataset(prep.dataset, "train", prep.data_root, limit=prep.opts.knn_train, image_size=size)
    test = load_dataset(prep.dataset, "test", prep.data_root, image_size=size)
    k = int(max(train.labels.max(), test.labels.max())) + 1
    ytr, yte = torch.as_tensor(train.labels).long(), torch.as_tensor(test.labels).long()

    def features(module, path):
        return [
            extract_features(module, images, prep.mean, prep.std, path, progress=progress).features
            for images in (train.images, test.images)
        ]

    def knn(feats):
        return knn_accuracy(feats[0], ytr, feats[1], yte, k=20, metric="cosine", num_classes=k)

    gated = features(prep.model, "gated")
    static = features(_StaticAsBackbone(prep.graphs.net), "dense")
    acc_g, acc_s = knn(gated), knn(static)
    cos = torch.nn.functional.cosine_similarity(static[1], gated[1], dim=1)
    report = {
        "knn20_gated": acc_g,
        "knn20_static": acc_s,
        "knn20_difference_points": 100 * (acc_s - acc_g),
        "cosine_to_gated_mean": float(cos.mean()),
        "cosine_to_gated_p10": float(cos.quantile(0.1)),
        "knn_train_images": len(train),
        "test_images": len(test),
        "within_1_point": abs(acc_s - acc_g) <= 0.01,
    }
    m = prep.opts.min_usage
    if not report["within_1_point"] and m > 0:
        tried = {}
        for candidate in (m / 2, m / 4, m / 8, 0.0):
            channels = prep.usage.channels(candidate, prep.opts.round_to, prep.model.cfg.gate_group)
            net, spec = build_graph(prep.model, "static", channels)
            acc = knn(features(_StaticAsBackbone(net), "dense"))
            tried[str(candidate)] = {
                "knn20_static": acc,
                "macs_ratio": prep.cost.static_macs(spec.widths) / prep.cost.dense_macs,
            }
            if abs(acc - acc_g) <= 0.01:
                report["min_usage_that_closes_it"] = candidate
                break
        report["min_usage_tried"] = tried
    return report


class _StaticAsBackbone(torch.nn.Module):
    """Lets feature extraction run a deploy module as if it were a backbone (features only)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, path="dense"):
        from gatekit.models import BackboneOutput

        head, self.net.head = self.net.head, None
        try:
            return BackboneOutput(self.net(x), None)
        finally:
            self.net.head = head
