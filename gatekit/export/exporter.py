"""`gatekit export`: build a graph from a checkpoint, export it, verify it in its runtime, then write it.

Every artifact is run in its runtime on real held-out images and compared with the PyTorch reference
of the same path (dense: the dense path; hybrid and dynamic: the gated path) before it is written; a
mismatch writes nothing. `static` is an approximation by design: it is verified against its own
PyTorch module, and its agreement with the gated path (feature cosine, k-NN) is reported.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gatekit import __version__
from gatekit.artifacts import FORMATS, get_format, publish
from gatekit.checkpoint import load_model
from gatekit.data import load_dataset, normalization
from gatekit.data.arrays import normalize_images, recorded_dir
from gatekit.errors import GatekitError
from gatekit.export.graphs import GRAPHS, build_graph
from gatekit.export.prune import select_all
from gatekit.models import cost_model
from gatekit.runtimes.verify import check, relative_error, run_batched

OPSET = 17
INPUT_NAME = "input"


@dataclass
class ExportOptions:
    graph: str = "dense"
    fmt: str = "onnx"
    calib: int = 2000
    min_usage: float = 0.0
    round_to: int = 16
    probe: str | None = None
    batch: int = 1
    dynamic_batch: bool = False
    fp16: bool = False
    verify_images: int = 64
    knn_train: int = 10000
    knn_check: bool = True
    record_inputs: int = 1000  # dynamic: per-input MACs of the first N test images, for `gatekit bench`
    # dynamic: only blocks whose output is at least this many pixels a side skip channels (0: every block, the
    # paper's form); the rest run whole constant-weight convs and mask (benchmarks/bench_cpu/dynamic-skipping.md)
    dynamic_min_size: int = 8
    data_dir: str | None = None
    threads: int | None = None
    extra: dict = field(default_factory=dict)


class Prepared:
    """Everything the formats share: the model, data, graph module, references and FLOPs."""

    def __init__(self, checkpoint: str | Path, opts: ExportOptions, progress: bool = True,
                 recorded_usage: dict | None = None):
        """`recorded_usage`: a static or hybrid graph's channels come from this gate usage (an earlier
        export manifest's `gate_usage` of the same checkpoint) instead of a new calibration pass."""
        from gatekit.evaluate.features import extract_features

        if opts.graph not in GRAPHS:
            raise GatekitError(f"unknown graph {opts.graph!r}: choose one of {', '.join(GRAPHS)}")
        if opts.batch < 1:
            raise GatekitError("batch must be >= 1")
        self.opts = opts
        self.model, self.meta = load_model(checkpoint)
        self.checkpoint = Path(checkpoint)
        train_cfg = self.meta.get("train_config", {})
        self.dataset = train_cfg.get("dataset", "cifar10")
        self.data_root = root = opts.data_dir or recorded_dir(train_cfg.get("data_dir"))
        self.mean, self.std = normalization(self.dataset)
        cfg = self.model.cfg
        self.cost = cost_model(cfg)
        n_verify = max(32, opts.verify_images)
        n_verify -= n_verify % max(opts.batch, 8 if opts.dynamic_batch else 1)
        test = load_dataset(self.dataset, "test", root, limit=n_verify, image_size=cfg.input_size)
        self.verify_images = normalize_images(test.images, self.mean, self.std)
        self.usage = None
        self.calib_active = None
        channels = None
        if recorded_usage is not None and opts.graph in ("static", "hybrid"):
            self.usage = [torch.tensor(c, dtype=torch.float32) for c in recorded_usage["counts"]]
            self.calib_n = int(recorded_usage["images"])
            if [len(u) for u in self.usage] != [b.planes for b in self.model.blocks]:
                raise GatekitError("the recorded gate usage does not fit this checkpoint's blocks")
            channels = select_all(self.usage, self.calib_n, opts.min_usage, opts.round_to, self.model.cfg.gate_group)
        elif opts.graph != "dense":
            calib = load_dataset(self.dataset, "train", root, limit=opts.calib, image_size=cfg.input_size)
            feats = extract_features(self.model, calib.images, self.mean, self.std, "gated", progress=progress,
                                     desc="calibration")
            self.usage, self.calib_n, self.calib_active = feats.usage, len(calib), feats.active
            if opts.graph in ("static", "hybrid"):
                channels = select_all(self.usage, self.calib_n, opts.min_usage, opts.round_to, self.model.cfg.gate_group)
        self.head = self._load_head(opts.probe)
        self._build(channels)

    def gate_usage(self) -> dict | None:
        """Per-block, per-channel counts of calibration images whose gate turned the channel on: what
        `gatekit pick --lut` plans static widths from (gatekit.models.channels), without torch."""
        if self.usage is None:
            return None
        return {"dataset": self.dataset, "split": "train", "images": int(self.calib_n),
                "counts": [[int(v) for v in u.round().long().tolist()] for u in self.usage]}

    def reselect(self, min_usage: float) -> None:
        """Static/hybrid: keep the channels on for more than `min_usage` of the calibration images, reusing
        the calibration already run (no second pass over the images)."""
        if self.opts.graph not in ("static", "hybrid"):
            raise ValueError("only static and hybrid graphs select channels")
        self.opts.min_usage = min_usage
        self._build(select_all(self.usage, self.calib_n, min_usage, self.opts.round_to, self.model.cfg.gate_group))

    def _build(self, channels: list[torch.Tensor] | None) -> None:
        self.channels = channels
        self.net, self.spec = build_graph(self.model, self.opts.graph, channels, self.head,
                                          dynamic_min_size=self.opts.dynamic_min_size)
        self._matmul_net = None
        self.agreement: dict | None = None

    def dynamic_form(self, fmt: str) -> str | None:
        """The dynamic graph's formulation for a format: OpenVINO's CPU plugin needs im2col + MatMul."""
        if self.opts.graph != "dynamic":
            return None
        return "matmul" if fmt == "openvino" else "conv"

    def net_for(self, fmt: str) -> torch.nn.Module:
        if self.dynamic_form(fmt) != "matmul":
            return self.net
        if self._matmul_net is None:
            self._matmul_net, _ = build_graph(self.model, "dynamic", None, self.head, dynamic_form="matmul",
                                              dynamic_min_size=self.opts.dynamic_min_size)
        return self._matmul_net

    def _load_head(self, probe: str | None) -> torch.nn.Linear | None:
        if not probe:
            return None
        from gatekit.evaluate.linear_probe import load_probe

        p = load_probe(probe)
        if p.weight.shape[1] != self.model.feature_dim:
            raise GatekitError(f"probe {probe} expects {p.weight.shape[1]}-d features, the model gives {self.model.feature_dim}")
        head = torch.nn.Linear(p.weight.shape[1], p.weight.shape[0])
        head.weight.data, head.bias.data = p.weight.float().clone(), p.bias.float().clone()
        return head

    @property
    def output_name(self) -> str:
        return "logits" if self.head is not None else "features"

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The PyTorch path the graph must equal (static: its own module)."""
        t = torch.from_numpy(x)
        with torch.inference_mode():
            if self.opts.graph == "static":
                return self.net(t).numpy()
            path = "dense" if self.opts.graph == "dense" else "gated"
            f = self.model(t, path).features
            return (f if self.head is None else self.head(f)).numpy()

    def gated_reference(self, x: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            f = self.model(torch.from_numpy(x), "gated").features
            return f if self.head is None else self.head(f)

    def torch_check(self, fmt: str) -> dict:
        """Checks the deploy module against the reference path before any export."""
        net = self.net_for(fmt)  # built outside inference mode: the exporter traces it afterwards
        with torch.inference_mode():
            out = net(torch.from_numpy(self.verify_images))
        if self.opts.graph == "static":  # an approximation by design: report its agreement
            cos = torch.nn.functional.cosine_similarity(out, self.gated_reference(self.verify_images), dim=1)
            return {"cosine_to_gated": {"mean": float(cos.mean()), "min": float(cos.min())}}
        err = relative_error(out.numpy(), self.reference(self.verify_images))
        if err > 1e-4:
            hint = ""
            if self.opts.graph == "hybrid":
                n = self.images_using_removed_channels()
                hint = (f": {n} of {len(self.verify_images)} held-out images turn on channels that were on for at most "
                        f"--min-usage {self.opts.min_usage} of the {self.calib_n} calibration images; raise --calib or lower --min-usage")
            raise GatekitError(f"the {self.opts.graph} graph differs from the PyTorch path by {err:.3g}{hint}; not exported")
        return {"torch_module_relative_error": err}

    def images_using_removed_channels(self) -> int:
        with torch.inference_mode():
            masks = self.model(torch.from_numpy(self.verify_images), "gated").masks
        hit = torch.zeros(len(self.verify_images), dtype=torch.bool)
        for mask, kept in zip(masks, self.spec.channels):
            removed = torch.ones(mask.shape[1], dtype=torch.bool)
            removed[kept] = False
            hit |= mask[:, removed].bool().any(dim=1)
        return int(hit.sum())

    def flops(self) -> dict:
        from gatekit.evaluate.flops_stats import flops_stats

        g = self.opts.graph
        dense = self.cost.dense_macs
        if g == "dense":
            macs = {"mean": dense}
        elif g == "static":
            macs = {"mean": self.cost.static_macs(self.spec.widths)}
        elif g == "hybrid":
            gate = sum(b.gate.macs for b in self.net.blocks)
            macs = {"mean": self.cost.static_macs(self.spec.widths) + gate}
        else:
            s = flops_stats(self.cost, self.executed_active(self.calib_active))
            macs = {"mean": s["mean_macs"], "p50": s["p50_macs"], "p90": s["p90_macs"],
                    "note": f"per input, over {self.calib_n} calibration images",
                    "mean_active_widths": [round(float(v), 2) for v in self.calib_active.double().mean(dim=0).tolist()]}
        macs["dense"] = dense
        macs["ratio_to_dense"] = macs["mean"] / dense
        macs["flop_counter_macs"] = flop_counter_macs(self.net, self.model.cfg.input_size) if g != "dynamic" else None
        return macs

    def executed_active(self, active: torch.Tensor) -> torch.Tensor:
        """Per-sample inner widths the dynamic graph computes: the active channels in blocks that skip,
        every channel in blocks that only mask (their convs run whole)."""
        full = torch.tensor([b.planes for b in self.model.blocks], dtype=active.dtype)
        skip = torch.tensor(self.spec.skipping or [True] * len(full))
        return torch.where(skip[None, :], active, full[None, :])

    def per_input_macs(self, progress: bool) -> dict:
        """Per-input MACs of the dynamic graph on the first `record_inputs` test images (batch 1)."""
        from gatekit.evaluate.features import extract_features
        from gatekit.evaluate.flops_stats import per_sample_macs

        test = load_dataset(self.dataset, "test", self.data_root, limit=self.opts.record_inputs,
                            image_size=self.model.cfg.input_size)
        active = extract_features(self.model, test.images, self.mean, self.std, "gated", progress=progress,
                                  desc="per-input MACs").active
        macs = per_sample_macs(self.cost, self.executed_active(active))
        return {"dataset": self.dataset, "split": "test", "first": len(test), "macs": [int(m) for m in macs.tolist()],
                "active_widths": active.round().int().tolist()}


def flop_counter_macs(net: torch.nn.Module, size: int) -> int:
    """An independent count: torch's FlopCounterMode on the deploy module (convs and FCs), halved."""
    from torch.utils.flop_counter import FlopCounterMode

    head, net.head = net.head, None
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(torch.zeros(1, 3, size, size))
    finally:
        net.head = head
    return counter.get_total_flops() // 2


def _export_onnx(prep: Prepared, path: Path, fmt: str) -> None:
    import onnx

    opts = prep.opts
    dummy = torch.from_numpy(prep.verify_images[: opts.batch])
    dynamic_axes = {INPUT_NAME: {0: "batch"}, prep.output_name: {0: "batch"}} if opts.dynamic_batch else None
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and constant-folding notes
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(prep.net_for(fmt), (dummy,), str(path), opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[prep.output_name], dynamic_axes=dynamic_axes, do_constant_folding=True,
                          dynamo=False)
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:  # onnx raises several checker/inference error types
        raise GatekitError(f"the exported ONNX graph fails onnx.checker: {str(e).splitlines()[0]}") from None


def _batches(prep: Prepared) -> list[int]:
    return [prep.opts.batch] + ([8] if prep.opts.dynamic_batch and prep.opts.batch != 8 else [])


def _verify(prep: Prepared, session, name: str, precision: str) -> dict:
    errors = {}
    for b in _batches(prep):
        actual = run_batched(session, prep.verify_images, b)
        errors[f"batch{b}"] = check(f"{name} at batch {b}", actual, prep.reference(prep.verify_images[: len(actual)]), precision)
    return errors


def artifact_stem(opts: ExportOptions) -> str:
    return opts.graph + ("-fp16" if opts.fp16 else "")


# One writer per format of gatekit.artifacts.FORMATS: each turns the verified-to-be ONNX graph into the
# format's files at the staged paths the table names, and opens the session that verification runs.

def _write_onnx(prep: Prepared, onnx_path: Path, staged: dict[str, Path], precision: str):
    """ONNX: the exported graph itself, run on ONNX Runtime."""
    from gatekit.runtimes import load_session

    os.replace(onnx_path, staged["onnx"])
    return load_session(staged["onnx"], "ort", threads=prep.opts.threads), {}


def _write_openvino(prep: Prepared, onnx_path: Path, staged: dict[str, Path], precision: str):
    """OpenVINO IR converted from the ONNX graph (fp16: compressed weights, decompressed and run in f32)."""
    import openvino as ov

    from gatekit.runtimes import load_session

    xml = staged["xml"]
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=precision == "fp16")
    if not staged["bin"].is_file():
        raise GatekitError(f"OpenVINO wrote no {staged['bin'].name} beside {xml.name}")
    try:
        session = load_session(xml, "openvino", threads=prep.opts.threads, precision="fp32")
    except GatekitError as e:  # the backend already names the unsupported operation in one line
        raise GatekitError(f"OpenVINO cannot run the {prep.opts.graph} graph: {e}") from None
    return session, {}


def _write_tensorrt(prep: Prepared, onnx_path: Path, staged: dict[str, Path], precision: str):
    """A TensorRT engine built here from the ONNX graph (engines are tied to their GPU)."""
    from gatekit.runtimes import load_session
    from gatekit.runtimes.tensorrt_build import build_engine

    built = build_engine(onnx_path, staged["engine"], precision=precision, batch=prep.opts.batch,
                         max_batch=8 if prep.opts.dynamic_batch else None)
    return load_session(staged["engine"], "tensorrt", precision=precision), {"build": built}


WRITERS = {"onnx": _write_onnx, "openvino": _write_openvino, "tensorrt": _write_tensorrt}  # one per artifacts.FORMATS


def export(checkpoint: str | Path, out_dir: str | Path, opts: ExportOptions, progress: bool = True,
           prepared: Prepared | None = None) -> dict:
    """Exports one graph to one format into out_dir; returns the manifest (also written beside it)."""
    fmt = get_format(opts.fmt)
    precision = "fp16" if opts.fp16 else "fp32"
    if precision not in fmt.precisions:
        raise GatekitError(f"{fmt.display} artifacts hold {' or '.join(fmt.precisions)}, not {precision}; "
                           f"use --format {' or '.join(f for f, r in FORMATS.items() if precision in r.precisions)}")
    prep = prepared or Prepared(checkpoint, opts, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = prep.torch_check(fmt.name)
    stem = artifact_stem(opts)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp)
        onnx_path = tmp / "traced.onnx"
        _export_onnx(prep, onnx_path, fmt.name)
        staged = {key: tmp / name for key, name in fmt.file_names(stem).items()}
        session, extra = WRITERS[fmt.name](prep, onnx_path, staged, precision)
        try:
            errors = _verify(prep, session, f"{fmt.name}/{session.info.name}", precision)
            runtime = dict(session.info.to_dict(), **extra)
        finally:
            session.close()
        manifest = _manifest(prep, opts, fmt.file_names(stem), runtime, errors, report)
        if opts.graph == "dynamic" and opts.record_inputs > 0:
            manifest["per_input"] = prep.per_input_macs(progress)
        if opts.graph == "static" and opts.knn_check:
            if prep.agreement is None:  # the same for every format: computed once
                prep.agreement = static_agreement(prep, progress)
            manifest["agreement"] = prep.agreement
        publish(out, stem, fmt.name, staged, manifest)
    return manifest


def _manifest(prep: Prepared, opts: ExportOptions, files: dict, runtime: dict, errors: dict, report: dict) -> dict:
    import onnx

    cfg = prep.model.cfg
    train_cfg = prep.meta.get("train_config", {})
    return {
        "gatekit_version": __version__,
        "checkpoint": str(prep.checkpoint),
        "checkpoint_sha256": prep.meta["sha256"],
        "method": train_cfg.get("method"),
        "budget": train_cfg.get("budget"),
        "graph": opts.graph,
        "dynamic_form": prep.dynamic_form(opts.fmt),
        "dynamic_skipping": ({"min_size": opts.dynamic_min_size, "blocks": prep.spec.skipping}
                             if opts.graph == "dynamic" else None),
        "format": opts.fmt,
        "files": files,
        "precision": "fp16" if opts.fp16 else "fp32",
        "model_config": cfg.to_dict(),
        "widths": prep.spec.widths,
        "full_widths": [b.planes for b in prep.cost.blocks],
        "channels": prep.spec.channels,
        "pruning": {"calib": opts.calib, "min_usage": opts.min_usage, "round_to": opts.round_to} if opts.graph in ("static", "hybrid") else None,
        "gate_usage": prep.gate_usage(),
        "macs": prep.flops(),
        "input": {"name": INPUT_NAME, "shape": [-1 if opts.dynamic_batch else opts.batch, 3, cfg.input_size, cfg.input_size],
                  "dtype": "float32", "layout": "NCHW", "scale": 1 / 255, "mean": list(prep.mean), "std": list(prep.std),
                  "dataset": prep.dataset, "data_dir": prep.data_root},
        "output": {"name": prep.output_name, "probe": opts.probe},
        "opset": OPSET,
        "onnx_version": onnx.__version__,
        "runtime": runtime,
        "verification": {"images": len(prep.verify_images), "relative_error": errors, "reference": "static module" if opts.graph == "static" else ("dense path" if opts.graph == "dense" else "gated path"), **report},
    }


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
        return [extract_features(module, images, prep.mean, prep.std, path, progress=progress).features
                for images in (train.images, test.images)]

    def knn(feats):
        return knn_accuracy(feats[0], ytr, feats[1], yte, k=20, metric="cosine", num_classes=k)

    gated = features(prep.model, "gated")
    static = features(_StaticAsBackbone(prep.net), "dense")
    acc_g, acc_s = knn(gated), knn(static)
    cos = torch.nn.functional.cosine_similarity(static[1], gated[1], dim=1)
    report = {"knn20_gated": acc_g, "knn20_static": acc_s, "knn20_difference_points": 100 * (acc_s - acc_g),
              "cosine_to_gated_mean": float(cos.mean()), "cosine_to_gated_p10": float(cos.quantile(0.1)),
              "knn_train_images": len(train), "test_images": len(test), "within_1_point": abs(acc_s - acc_g) <= 0.01}
    m = prep.opts.min_usage
    if not report["within_1_point"] and m > 0:
        tried = {}
        for candidate in (m / 2, m / 4, m / 8, 0.0):
            channels = select_all(prep.usage, prep.calib_n, candidate, prep.opts.round_to, prep.model.cfg.gate_group)
            net, spec = build_graph(prep.model, "static", channels)
            acc = knn(features(_StaticAsBackbone(net), "dense"))
            tried[str(candidate)] = {"knn20_static": acc, "macs_ratio": prep.cost.static_macs(spec.widths) / prep.cost.dense_macs}
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
