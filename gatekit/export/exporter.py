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

from gatekit import __version__, native_ops
from gatekit.artifacts import FALLBACK, FALLBACK_PREFIX, FORMATS, NATIVE, get_format, publish
from gatekit.checkpoint import load_model
from gatekit.data import load_dataset, normalization
from gatekit.data.arrays import normalize_images, recorded_dir
from gatekit.errors import GatekitError
from gatekit.export.channel_selection import select_all
from gatekit.export.graphs import GRAPHS, NATIVE_GATES, NATIVE_SHORTCUTS, GraphSpec, build_graph, native_op_types
from gatekit.export.int8 import int8_op_types
from gatekit.models import cost_model
from gatekit.runtimes.verify import check, relative_error, run_batched

OPSET = 17
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
NATIVE_DOMAIN = native_ops.DOMAIN
DYNAMIC_FORMS = ("auto", "native", "conv", "matmul", "qdq")  # qdq: the int8 dynamic graph's standard-ops form
DYNAMIC_PRECISIONS = ("fp32", "int8")
INT8_DYNAMIC_FORMATS = ("onnx", "openvino")  # where gatekit's int8 ops (or their Q/DQ form) run
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
    fp16: bool = False  # the older spelling of precision="fp16"
    precision: str = "fp32"  # fp32, fp16, bf16 (OpenVINO's inference precision) or int8 (quantized graphs)
    quant_calib: int = 300  # int8: training images that calibrate the quantizer (from the calibration set)
    quant_exclude: tuple[str, ...] = ()  # int8: parts kept in float: stem, last, head, blockN
    knn_test: int = 10000  # reduced precision: test images of the k-NN check (the training memory is knn_train)
    min_cosine: float = 0.99  # reduced precision: refuse when the mean feature cosine to fp32 is lower
    max_knn_drop: float = 1.0  # reduced precision: refuse when k-NN top-1 drops more points than this
    verify_images: int = 64
    knn_train: int = 10000
    knn_check: bool = True
    record_inputs: int = 1000  # dynamic: per-input MACs of the first N test images, for `gatekit bench`
    # dynamic: "auto" (the native op where its library is built for the format's runtime, else the standard-ops
    # form), "native" (gatekit.GatedBlock nodes, with a standard-ops fallback beside them), "conv" or "matmul"
    # (fp32), "qdq" (int8: QuantizeLinear / DequantizeLinear around whole convs, the mask a Mul)
    dynamic_form: str = "auto"
    # dynamic, native form: each block's gate inside its node ("op": gatekit.GatedBlockWithGate) or in standard ops
    # feeding gatekit.GatedBlock ("graph", the earlier form: seven small nodes a block around the op)
    native_gate: str = "op"
    # dynamic, native form with gates in the op: projection shortcuts inside the node too ("op":
    # gatekit.GatedBlockWithGateAndShortcut, no layout reorders around a Conv node on OpenVINO) or a Conv ("graph")
    native_shortcut: str = "op"
    # dynamic: only blocks whose output is at least this many pixels a side skip channels (0: every block, the
    # paper's form); the rest run whole constant-weight convs and mask (benchmarks/bench_cpu/dynamic-skipping.md).
    # None: 0 for the native form, 8 for the standard-ops forms (whose gathers pay only on large maps)
    dynamic_min_size: int | None = None
    data_dir: str | None = None
    threads: int | None = None
    extra: dict = field(default_factory=dict)


class Prepared:
    """Everything the formats share: the model, data, graph module, references and FLOPs."""

    def __init__(
        self, checkpoint: str | Path, opts: ExportOptions, progress: bool = True, recorded_usage: dict | None = None
    ):
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
        # a pruned dense encoder (gatekit prune): its dense graph keeps only the channels the record names
        self.pruned = self.meta.get("pruned") if isinstance(self.meta.get("pruned"), dict) else None
        if self.pruned is not None and opts.graph != "dense":
            raise GatekitError(
                f"{checkpoint} is a pruned dense encoder ({self.pruned.get('tool')}): it has no trained gates, "
                "so export its dense graph (--graph dense), which keeps only its channels"
            )
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
            feats = extract_features(
                self.model, calib.images, self.mean, self.std, "gated", progress=progress, desc="calibration"
            )
            self.usage, self.calib_n, self.calib_active = feats.usage, len(calib), feats.active
            if opts.graph in ("static", "hybrid"):
                channels = select_all(
                    self.usage, self.calib_n, opts.min_usage, opts.round_to, self.model.cfg.gate_group
                )
        if self.pruned is not None:
            kept = self.pruned.get("channels")
            if (
                not isinstance(kept, list)
                or len(kept) != len(self.model.blocks)
                or not all(
                    isinstance(c, list) and c and all(isinstance(i, int) and 0 <= i < b.planes for i in c)
                    for c, b in zip(kept, self.model.blocks)
                )
            ):
                raise GatekitError(
                    f"{checkpoint}: the 'pruned' record's 'channels' must list kept channels for each of "
                    f"its {len(self.model.blocks)} blocks"
                )
            channels = [torch.tensor(c, dtype=torch.long) for c in kept]
        self.head = self._load_head(opts.probe)
        self._quant_calib: list[np.ndarray] | None = None  # int8 calibration batches, loaded once
        self._knn_sets: tuple | None = None  # reduced-precision k-NN check: images, labels, fp32 features
        self._int8_scales: list[dict | None] | None = None  # int8 dynamic graph: per block x_scale / h_scale
        self._int8_agreement: dict[str, dict] = {}  # int8 dynamic graph: gate agreement per form
        self._build(channels)

    def quant_calibration(self) -> list[np.ndarray]:
        """int8: real training images (the first --quant-calib of the calibration set), one input batch each."""
        if self._quant_calib is None:
            n = self.opts.quant_calib
            if n < 1:
                raise GatekitError("--quant-calib must be at least 1")
            data = load_dataset(self.dataset, "train", self.data_root, limit=n, image_size=self.model.cfg.input_size)
            x = normalize_images(data.images, self.mean, self.std)
            b = self.opts.batch
            self._quant_calib = [x[i : i + b] for i in range(0, len(x) - b + 1, b)]
        return self._quant_calib

    def quant_calibration_record(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": "train",
            "images": int(sum(len(x) for x in self.quant_calibration())),
            "first": True,
        }

    def quant_patterns(self) -> list[str]:
        from gatekit.runtimes.quantize import exclude_patterns

        return exclude_patterns(list(self.opts.quant_exclude), len(self.model.blocks))

    def knn_of(self, features) -> dict:
        """k-NN top-1 (k=20, cosine) of `features(images)` against the fp32 graph's, on --knn-train training
        images as memory and --knn-test test images: one protocol for every reduced-precision artifact."""
        from gatekit.evaluate.knn import knn_accuracy

        size = self.model.cfg.input_size
        if self._knn_sets is None:
            train = load_dataset(self.dataset, "train", self.data_root, limit=self.opts.knn_train, image_size=size)
            test = load_dataset(self.dataset, "test", self.data_root, limit=self.opts.knn_test, image_size=size)
            sets = [normalize_images(d.images, self.mean, self.std) for d in (train, test)]
            labels = [torch.as_tensor(d.labels).long() for d in (train, test)]
            fp32 = [self.reference_batched(x) for x in sets]
            self._knn_sets = (sets, labels, fp32)
        sets, labels, fp32 = self._knn_sets
        k = int(max(labels[0].max(), labels[1].max())) + 1

        def acc(feats):  # a graph of fixed batch b sees the first multiple of b images of each set
            train, test = (torch.as_tensor(np.asarray(f)) for f in feats)
            return knn_accuracy(
                train, labels[0][: len(train)], test, labels[1][: len(test)], k=20, metric="cosine", num_classes=k
            )

        b = self.opts.batch
        base = acc(fp32)
        mine = acc([features(x[: len(x) - len(x) % b]) for x in sets])
        return {
            "knn20": mine,
            "knn20_fp32": base,
            "knn_delta_points": 100 * (mine - base),
            "knn_train_images": int(len(sets[0])),
            "knn_test_images": int(len(sets[1])),
        }

    def reference_batched(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([self.reference(x[i : i + batch]) for i in range(0, len(x), batch)])

    def gate_usage(self) -> dict | None:
        """Per-block, per-channel counts of calibration images whose gate turned the channel on: what
        `gatekit pick --lut` plans static widths from (gatekit.models.channels), without torch."""
        if self.usage is None:
            return None
        return {
            "dataset": self.dataset,
            "split": "train",
            "images": int(self.calib_n),
            "counts": [[int(v) for v in u.round().long().tolist()] for u in self.usage],
        }

    def reselect(self, min_usage: float) -> None:
        """Static/hybrid: keep the channels on for more than `min_usage` of the calibration images, reusing
        the calibration already run (no second pass over the images)."""
        if self.opts.graph not in ("static", "hybrid"):
            raise ValueError("only static and hybrid graphs select channels")
        self.opts.min_usage = min_usage
        self._build(select_all(self.usage, self.calib_n, min_usage, self.opts.round_to, self.model.cfg.gate_group))

    def _build(self, channels: list[torch.Tensor] | None) -> None:
        self.channels = channels
        self._graphs: dict[str | None, tuple] = {}
        self.agreement: dict | None = None
        self.net, self.spec = self.graph(self.standard_form("onnx"))
        self._int8_scales, self._int8_agreement = None, {}

    def standard_form(self, fmt: str, precision: str = "fp32") -> str | None:
        """The dynamic graph in standard ops for a format (OpenVINO's CPU plugin needs im2col + MatMul; int8: Q/DQ
        around whole convolutions, which both runtimes take)."""
        if self.opts.graph != "dynamic":
            return None
        if precision == "int8":
            return "qdq"
        return "matmul" if fmt == "openvino" else "conv"

    def dynamic_form(self, fmt: str, precision: str = "fp32") -> str | None:
        """The dynamic graph's form for a format and precision, as --dynamic-form resolves here (None: not dynamic)."""
        if self.opts.graph != "dynamic":
            return None
        want = self.opts.dynamic_form
        if want not in DYNAMIC_FORMS:
            raise GatekitError(f"unknown --dynamic-form {want!r}: choose one of {', '.join(DYNAMIC_FORMS)}")
        int8 = precision == "int8"
        if int8 and want in ("conv", "matmul"):
            raise GatekitError(
                f"--dynamic-form {want} is an fp32 form: int8 dynamic graphs are written as gatekit's "
                "int8 ops (--dynamic-form native) or in standard ops (--dynamic-form qdq); auto picks"
            )
        if not int8 and want == "qdq":
            raise GatekitError(
                "--dynamic-form qdq is the int8 dynamic graph's standard-ops form: add --precision "
                "int8, or use conv or matmul for fp32"
            )
        native_ok = FORMATS[fmt].native_library is not None
        runtime = FORMATS[fmt].runtime
        if want == "auto":
            if not native_ok:
                return self.standard_form(fmt, precision)
            lib, refused = native_ops.find_library(runtime)
            if lib is None:
                native_ops.warn_refused(refused, "dynamic graphs are exported in standard ops")
            return (
                "native"
                if lib is not None and self._library_runs(runtime, int8)
                else self.standard_form(fmt, precision)
            )
        if want == "native":
            if not native_ok:
                raise GatekitError(
                    f"the native dynamic form runs on {', '.join(f for f, r in FORMATS.items() if r.native_library)}"
                    f", not {fmt}"
                )
            lib, refused = native_ops.find_library(runtime)
            if lib is None and refused.state != "missing":
                raise GatekitError(f"the native dynamic form needs gatekit's op library for {runtime}: {refused}")
            if lib is None:
                raise GatekitError(
                    f"the native dynamic form needs gatekit's op library for {runtime}, and none "
                    "is built for the installed version: run `gatekit ops build` (`gatekit ops status` says why)"
                )
            if int8 and not self._library_runs(runtime, True):
                raise GatekitError(
                    f"gatekit's op library for {runtime} ({native_ops.library_for(runtime)}) has no "
                    f"int8 gated-block ops ({', '.join(self.int8_op_types())}): rebuild it with "
                    "`gatekit ops build`, or write the standard-ops form (--dynamic-form qdq)"
                )
        return want

    def int8_op_types(self) -> list[str]:
        """The gatekit int8 ops a native int8 dynamic graph of these options uses."""
        if self.opts.native_gate != "op":
            return ["GatedBlockInt8"]
        with_shortcut = self.opts.native_shortcut == "op" and any(b.downsample is not None for b in self.model.blocks)
        return ["GatedBlockWithGateInt8"] + (["GatedBlockWithGateAndShortcutInt8"] if with_shortcut else [])

    def _library_runs(self, runtime: str, int8: bool) -> bool:
        """Whether the op library built for `runtime` exists and (int8) runs the int8 ops these options use."""
        lib = native_ops.library_for(runtime)
        if lib is None or not int8:
            return lib is not None
        from gatekit.runtimes.native_probe import library_runs

        return library_runs(runtime, lib, self.int8_op_types())

    def min_size(self, form: str | None) -> int:
        if self.opts.dynamic_min_size is not None:
            return self.opts.dynamic_min_size
        return 0 if form == "native" else 8

    def used_channels(self) -> list[torch.Tensor]:
        """Per block, the channels some calibration image turned on (the native graph removes the others)."""
        return select_all(self.usage, self.calib_n, 0.0, 1, self.model.cfg.gate_group)

    def graph(self, form: str | None = None, precision: str = "fp32") -> tuple[torch.nn.Module, GraphSpec]:
        """The deploy module and its spec for a dynamic form (None: the graph's only form) and precision (int8: the
        int8 dynamic graph, calibrated), built once."""
        if self.opts.graph == "dynamic" and precision == "int8":
            return self._int8_graph(form)
        if form not in self._graphs:
            if form is None:
                built = build_graph(self.model, self.opts.graph, self.channels, self.head)
            elif form == "native":
                if self.opts.native_gate not in NATIVE_GATES:
                    raise GatekitError(
                        f"unknown --native-gate {self.opts.native_gate!r}: choose one of {', '.join(NATIVE_GATES)}"
                    )
                if self.opts.native_shortcut not in NATIVE_SHORTCUTS:
                    raise GatekitError(
                        f"unknown --native-shortcut {self.opts.native_shortcut!r}: choose one of "
                        f"{', '.join(NATIVE_SHORTCUTS)}"
                    )
                built = build_graph(
                    self.model,
                    "dynamic",
                    self.used_channels(),
                    self.head,
                    dynamic_form="native",
                    dynamic_min_size=self.min_size(form),
                    native_gate=self.opts.native_gate,
                    native_shortcut=self.opts.native_shortcut,
                )
            else:
                built = build_graph(
                    self.model, "dynamic", None, self.head, dynamic_form=form, dynamic_min_size=self.min_size(form)
                )
            self._graphs[form] = built
        return self._graphs[form]

    def int8_float_blocks(self) -> frozenset[int]:
        """int8 dynamic graph: the blocks --quant-exclude keeps in float32 (blockN, last). The stem and the head are
        float32 in that graph whatever is asked."""
        from gatekit.runtimes.quantize import exclude_patterns

        names = list(self.opts.quant_exclude)
        exclude_patterns(names, len(self.model.blocks))  # one line for an unknown name
        n = len(self.model.blocks)
        return frozenset(
            n - 1 if name == "last" else int(name[5:]) for name in names if name == "last" or name.startswith("block")
        )

    def _int8_graph(self, form: str | None) -> tuple[torch.nn.Module, GraphSpec]:
        """The int8 dynamic graph of a form ("native": gatekit's int8 ops, "qdq": standard ops), its scales calibrated
        once on the --quant-calib training images (the fp32 gated graph's activations; every form shares them) and
        its gate agreement with the fp32 gated graph measured on the same images."""
        from gatekit.export.int8 import INT8_FORMS, build_int8_graph, calibrate, gate_agreement

        if form not in INT8_FORMS:
            raise GatekitError(f"the int8 dynamic graph is written as {' or '.join(INT8_FORMS)}, not {form}")
        key = ("int8", form)
        if key not in self._graphs:
            net, spec = build_int8_graph(
                self.model,
                self.used_channels(),
                self.head,
                form,
                min_size=self.min_size(form),
                native_gate=self.opts.native_gate,
                native_shortcut=self.opts.native_shortcut,
                float_blocks=self.int8_float_blocks(),
            )
            x = np.concatenate(self.quant_calibration())
            batches = [x[i : i + 64] for i in range(0, len(x), 64)]
            if self._int8_scales is None:
                self._int8_scales = calibrate(net, batches)
            else:
                for block, record in zip(net.blocks, self._int8_scales):
                    if record is not None:
                        block.set_scales(record["x_scale"], record["h_scale"])
            self._int8_agreement[form] = gate_agreement(net, batches)
            self._graphs[key] = (net, spec)
        return self._graphs[key]

    def int8_record(self, form: str) -> dict:
        """What the manifest records of an int8 dynamic graph: how it was quantized, its scales, the calibration set,
        the blocks kept in float32 and the gate agreement with the fp32 gated graph on the calibration images."""
        from gatekit.export import int8

        self._int8_graph(form)
        float_blocks = sorted(self.int8_float_blocks())
        return {
            "tool": "gatekit",
            "version": __version__,
            "format": "gatekit int8 ops" if form == "native" else "QDQ (QuantizeLinear / DequantizeLinear)",
            "weights": "int8, per output channel, symmetric, [-127, 127]",
            "activations": "uint8, zero point 0: per block x_scale (block input) and h_scale (hidden activation)",
            "accumulation": (
                "int32" if form == "native" else "the runtime's (float convolutions over dequantized values)"
            ),
            "estimator": int8.ESTIMATOR,
            "estimator_detail": f"MSE-optimal clipping threshold / 255 over a {int8.HIST_BINS}-bin histogram of "
            "the fp32 gated graph's nonzero activations on the calibration images",
            "float32": ["stem", "gates", "biases", "residual sums", "pooling", "head"]
            + [f"block{i}" for i in float_blocks],
            "float_blocks": float_blocks,
            "scales": [r for r in self._int8_scales if r is not None],
            "gate_agreement": self._int8_agreement[form],
            "calibration": self.quant_calibration_record(),
        }

    def _load_head(self, probe: str | None) -> torch.nn.Linear | None:
        if not probe:
            return None
        from gatekit.evaluate.linear_probe import load_probe

        p = load_probe(probe)
        if p.weight.shape[1] != self.model.feature_dim:
            raise GatekitError(
                f"probe {probe} expects {p.weight.shape[1]}-d features, the model gives {self.model.feature_dim}"
            )
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

    def torch_check(self, form: str | None = None, precision: str = "fp32") -> dict:
        """Checks the deploy module of a form against the reference path before any export. int8 dynamic: its fp32
        twin (the same used channels, float weights) must equal the gated path; the int8 graph itself is checked
        in its runtime against the fp32 gated graph (cosine, k-NN)."""
        if self.opts.graph == "dynamic" and precision == "int8":
            return {"fp32_" + k: v for k, v in self.torch_check("native").items()}
        net, spec = self.graph(form)  # built outside inference mode: the exporter traces it afterwards
        with torch.inference_mode():
            out = net(torch.from_numpy(self.verify_images))
        if self.opts.graph == "static":  # an approximation by design: report its agreement
            cos = torch.nn.functional.cosine_similarity(out, self.gated_reference(self.verify_images), dim=1)
            return {"cosine_to_gated": {"mean": float(cos.mean()), "min": float(cos.min())}}
        err = relative_error(out.numpy(), self.reference(self.verify_images))
        if err > 1e-4:
            hint = ""
            if spec.channels:  # hybrid, native dynamic: channels unused over the calibration images were removed
                n = self.images_using_removed_channels(spec)
                hint = (
                    f": {n} of {len(self.verify_images)} held-out images turn on channels that were on for at most "
                    f"--min-usage {self.opts.min_usage} of the {self.calib_n} calibration images; raise --calib"
                    + (" or lower --min-usage" if self.opts.graph == "hybrid" else "")
                )
            raise GatekitError(
                f"the {self.opts.graph} graph{f' ({form})' if form else ''} differs from the PyTorch path by "
                f"{err:.3g}{hint}; not exported"
            )
        return {"torch_module_relative_error": err}

    def images_using_removed_channels(self, spec) -> int:
        with torch.inference_mode():
            masks = self.model(torch.from_numpy(self.verify_images), "gated").masks
        hit = torch.zeros(len(self.verify_images), dtype=torch.bool)
        for mask, kept in zip(masks, spec.channels):
            removed = torch.ones(mask.shape[1], dtype=torch.bool)
            removed[kept] = False
            hit |= mask[:, removed].bool().any(dim=1)
        return int(hit.sum())

    def flops(self, form: str | None = None, precision: str = "fp32") -> dict:
        from gatekit.evaluate.flops_stats import flops_stats

        spec = self.graph(form, precision)[1]
        g = self.opts.graph
        dense = self.cost.dense_macs
        if g == "dense":
            macs = {"mean": dense if self.pruned is None else self.cost.static_macs(spec.widths)}
        elif g == "static":
            macs = {"mean": self.cost.static_macs(self.spec.widths)}
        elif g == "hybrid":
            gate = sum(b.gate.macs for b in self.net.blocks)
            macs = {"mean": self.cost.static_macs(self.spec.widths) + gate}
        else:
            s = flops_stats(self.cost, self.executed_active(self.calib_active, spec))
            macs = {
                "mean": s["mean_macs"],
                "p50": s["p50_macs"],
                "p90": s["p90_macs"],
                "note": f"per input, over {self.calib_n} calibration images",
                "mean_active_widths": [round(float(v), 2) for v in self.calib_active.double().mean(dim=0).tolist()],
            }
        macs["dense"] = dense
        macs["ratio_to_dense"] = macs["mean"] / dense
        macs["flop_counter_macs"] = flop_counter_macs(self.net, self.model.cfg.input_size) if g != "dynamic" else None
        return macs

    def executed_active(self, active: torch.Tensor, spec) -> torch.Tensor:
        """Per-sample inner widths a dynamic graph computes: the active channels in blocks that skip, every
        channel it keeps in blocks that only mask (their convs run whole)."""
        full = torch.tensor(spec.widths, dtype=active.dtype)
        skip = torch.tensor(spec.skipping or [True] * len(full))
        return torch.where(skip[None, :], active, full[None, :])

    def per_input_macs(self, progress: bool, form: str | None = None, precision: str = "fp32") -> dict:
        """Per-input MACs of the dynamic graph on the first `record_inputs` test images (batch 1)."""
        from gatekit.evaluate.features import extract_features
        from gatekit.evaluate.flops_stats import per_sample_macs

        test = load_dataset(
            self.dataset, "test", self.data_root, limit=self.opts.record_inputs, image_size=self.model.cfg.input_size
        )
        active = extract_features(
            self.model, test.images, self.mean, self.std, "gated", progress=progress, desc="per-input MACs"
        ).active
        macs = per_sample_macs(self.cost, self.executed_active(active, self.graph(form, precision)[1]))
        return {
            "dataset": self.dataset,
            "split": "test",
            "first": len(test),
            "macs": [int(m) for m in macs.tolist()],
            "active_widths": active.round().int().tolist(),
        }


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


def _export_onnx(prep: Prepared, path: Path, form: str | None) -> None:
    import onnx

    opts = prep.opts
    net = prep.graph(form, graph_precision(opts))[0]
    dummy = torch.from_numpy(prep.verify_images[: opts.batch])
    dynamic_axes = {INPUT_NAME: {0: "batch"}, prep.output_name: {0: "batch"}} if opts.dynamic_batch else None
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and constant-folding notes
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[prep.output_name],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            custom_opsets={NATIVE_DOMAIN: 1} if form == "native" else None,
            dynamo=False,
        )
    model = onnx.load(str(path))
    if form == "native" and _inline_constant_identities(model):
        onnx.save(model, str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:  # onnx raises several checker/inference error types
        raise GatekitError(f"the exported ONNX graph fails onnx.checker: {str(e).splitlines()[0]}") from None


def _inline_constant_identities(model) -> bool:
    """Points the native ops' weight inputs straight at initializers. The exporter shares equal constants
    through Identity nodes; the op libraries pack weights when the session is created and need them constant."""
    inits = {t.name for t in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in inits}
    changed = False
    for node in model.graph.node:
        if node.domain == NATIVE_DOMAIN:
            for i, name in enumerate(node.input):
                if name in alias:
                    node.input[i] = alias[name]
                    changed = True
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dead = [n for n in model.graph.node if n.op_type == "Identity" and n.output[0] in alias and n.output[0] not in used]
    for n in dead:
        model.graph.node.remove(n)
    return changed


def _verify_reduced(prep: Prepared, session, name: str, precision: str) -> dict:
    """Reduced precision cannot match fp32 elementwise: the artifact's features against the fp32 graph's
    (its PyTorch module, equal to the fp32 artifact within 1e-4) on held-out real images (cosine), and
    the k-NN top-1 of its own features against theirs. Refuses, saying by how much, past the thresholds."""
    from gatekit.runtimes.quantize import cosine

    opts = prep.opts
    errors, outputs = {}, {}
    for b in _batches(prep):
        outputs[b] = run_batched(session, prep.verify_images, b)
        errors[f"batch{b}"] = relative_error(outputs[b], prep.reference(prep.verify_images[: len(outputs[b])]))
    actual = outputs[opts.batch]
    cos = cosine(actual, prep.reference(prep.verify_images[: len(actual)]))
    knn = prep.knn_of(lambda x: run_batched(session, x, prep.opts.batch))
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
            if prep.opts.graph == "dynamic"
            else "keep parts in float (--quant-exclude stem,last) or calibrate on more images (--quant-calib)"
        )
        raise GatekitError(f"{name} {precision}: {'; '.join(problems)}; not written: {hint}")
    return report


def _batches(prep: Prepared) -> list[int]:
    return [prep.opts.batch] + ([8] if prep.opts.dynamic_batch and prep.opts.batch != 8 else [])


def _verify(prep: Prepared, session, name: str, precision: str) -> dict:
    errors = {}
    for b in _batches(prep):
        actual = run_batched(session, prep.verify_images, b)
        errors[f"batch{b}"] = check(
            f"{name} at batch {b}", actual, prep.reference(prep.verify_images[: len(actual)]), precision
        )
    return errors


def precision_of(opts: ExportOptions) -> str:
    return "fp16" if opts.fp16 else opts.precision


def graph_precision(opts: ExportOptions) -> str:
    """The precision the exported graph itself is built in: int8 for an int8 dynamic graph (gatekit's int8 ops or
    Q/DQ), else fp32 (other int8 graphs are exported in float and quantized by the runtime's tool)."""
    return "int8" if opts.graph == "dynamic" and precision_of(opts) == "int8" else "fp32"


def artifact_stem(opts: ExportOptions) -> str:
    """static.onnx for fp32, static-int8.onnx for another precision."""
    p = precision_of(opts)
    return opts.graph + ("" if p == "fp32" else f"-{p}")


# One writer per format of gatekit.artifacts.FORMATS: each turns the verified-to-be ONNX graph into the
# format's files at the staged paths the table names, and opens the session that verification runs.


def _write_onnx(
    prep: Prepared, onnx_path: Path, staged: dict[str, Path], precision: str, extensions=(), quantized=None
):
    """ONNX: the exported graph itself (int8: quantized to QDQ, unless the graph is int8 already: `quantized`, its
    record), run on ONNX Runtime."""
    from gatekit.runtimes import load_session

    extra = {}
    if quantized is not None:
        extra["quantization"] = quantized
        os.replace(onnx_path, staged["onnx"])
    elif precision == "int8":
        from gatekit.runtimes.quantize import quantize_onnx

        extra["quantization"] = dict(
            quantize_onnx(onnx_path, staged["onnx"], prep.quant_calibration(), prep.quant_patterns()),
            calibration=prep.quant_calibration_record(),
        )
    else:
        os.replace(onnx_path, staged["onnx"])
    return load_session(
        staged["onnx"], "ort", threads=prep.opts.threads, extensions=extensions, precision=precision
    ), extra


def _write_openvino(
    prep: Prepared, onnx_path: Path, staged: dict[str, Path], precision: str, extensions=(), quantized=None
):
    """OpenVINO IR converted from the ONNX graph (fp16: compressed weights, decompressed and run in f32; int8:
    quantized by NNCF, unless the graph is int8 already: `quantized`, its record; its float parts run f32)."""
    import openvino as ov

    from gatekit.runtimes import load_session

    xml = staged["xml"]
    converted = (
        ov.convert_model(str(onnx_path), extension=list(extensions)) if extensions else ov.convert_model(str(onnx_path))
    )
    extra = {}
    if quantized is not None:
        extra["quantization"] = quantized
    elif precision == "int8":
        from gatekit.runtimes.quantize import quantize_openvino

        converted, record = quantize_openvino(converted, prep.quant_calibration(), prep.quant_patterns())
        extra["quantization"] = dict(record, calibration=prep.quant_calibration_record())
    if extensions:
        from gatekit.runtimes.openvino_layout import prefer_blocked_feeders

        extra["primitives_priority"] = prefer_blocked_feeders(converted)
    ov.save_model(converted, str(xml), compress_to_fp16=precision == "fp16")
    if not staged["bin"].is_file():
        raise GatekitError(f"OpenVINO wrote no {staged['bin'].name} beside {xml.name}")
    try:
        session = load_session(xml, "openvino", threads=prep.opts.threads, precision=precision, extensions=extensions)
    except GatekitError as e:  # the backend already names the unsupported operation in one line
        raise GatekitError(f"OpenVINO cannot run the {prep.opts.graph} graph: {e}") from None
    return session, extra


def _write_tensorrt(
    prep: Prepared, onnx_path: Path, staged: dict[str, Path], precision: str, extensions=(), quantized=None
):
    """A TensorRT engine built here from the ONNX graph (engines are tied to their GPU)."""
    from gatekit.runtimes import load_session
    from gatekit.runtimes.tensorrt_build import build_engine

    built = build_engine(
        onnx_path,
        staged["engine"],
        precision=precision,
        batch=prep.opts.batch,
        max_batch=8 if prep.opts.dynamic_batch else None,
    )
    return load_session(staged["engine"], "tensorrt", precision=precision), {"build": built}


WRITERS = {"onnx": _write_onnx, "openvino": _write_openvino, "tensorrt": _write_tensorrt}  # one per artifacts.FORMATS


def precision_refusal(graph: str, fmt: str, precision: str) -> str | None:
    """Why a graph cannot be exported to a format in a precision (one line), or None when it can."""
    f = get_format(fmt)
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}"
    if precision not in f.precisions:
        return (
            f"{f.display} artifacts hold {', '.join(f.precisions)}, not {precision}; "
            f"use --format {' or '.join(n for n, r in FORMATS.items() if precision in r.precisions)}"
        )
    if graph == "dynamic" and precision not in DYNAMIC_PRECISIONS:
        return (
            f"dynamic graphs are exported in fp32 or int8 (the precisions of gatekit's ops and their standard-ops "
            f"forms), not {precision}; dense, static and hybrid graphs take --precision {precision}"
        )
    if graph == "dynamic" and precision == "int8" and fmt not in INT8_DYNAMIC_FORMATS:
        where = " and ".join(FORMATS[n].display for n in INT8_DYNAMIC_FORMATS)
        return (
            f"int8 dynamic graphs run on {where} (gatekit's int8 ops or their Q/DQ form), not as a {f.display}; "
            f"use --format {' or '.join(INT8_DYNAMIC_FORMATS)}"
        )
    return None


def export(
    checkpoint: str | Path,
    out_dir: str | Path,
    opts: ExportOptions,
    progress: bool = True,
    prepared: Prepared | None = None,
) -> dict:
    """Exports one graph to one format into out_dir; returns the manifest (also written beside it)."""
    fmt = get_format(opts.fmt)
    precision = precision_of(opts)
    refusal = precision_refusal(opts.graph, fmt.name, precision)
    if refusal:
        raise GatekitError(refusal)
    prep = prepared or Prepared(checkpoint, opts, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gprec = graph_precision(opts)
    form = prep.dynamic_form(fmt.name, gprec)
    native = form == "native"
    # (form, extensions): the graph itself, and for a native-op graph its standard-ops fallback too
    paths = [(form, (str(native_ops.library_for(fmt.runtime)),) if native else ())]
    if native:
        paths.append((prep.standard_form(fmt.name, gprec), ()))
    report = prep.torch_check(form, gprec)
    if native and gprec == "fp32":
        report["fallback"] = prep.torch_check(paths[1][0])
    stem = artifact_stem(opts)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp)
        staged = {key: tmp / name for key, name in fmt.file_names(stem, fallback=native).items()}
        checked = []
        for i, (f, extensions) in enumerate(paths):
            onnx_path = tmp / f"traced-{f or opts.graph}.onnx"
            _export_onnx(prep, onnx_path, f)
            prefix = FALLBACK_PREFIX if i else ""
            quantized = prep.int8_record(f) if gprec == "int8" else None
            session, extra = WRITERS[fmt.name](
                prep,
                onnx_path,
                {k: staged[prefix + k] for k, _ in fmt.files},
                precision,
                extensions,
                quantized=quantized,
            )
            try:
                if extensions:
                    session.info.ops, session.info.ops_library = NATIVE, extensions[0]
                    session.info.ops_isa = native_ops.loaded_isa(extensions[0])
                elif native:
                    session.info.ops = FALLBACK
                label = f"{fmt.name}/{session.info.name}" + (f" ({f})" if f else "")
                errors = (
                    _verify(prep, session, label, precision)
                    if precision == "fp32"
                    else _verify_reduced(prep, session, label, precision)
                )
                if quantized is not None:
                    errors["gate_agreement"] = quantized["gate_agreement"]
                checked.append((errors, dict(session.info.to_dict(), **extra), extra))
            finally:
                session.close()
        (errors, runtime, extra) = checked[0]
        if gprec == "int8":  # recorded once, at the top level
            runtime.pop("quantization", None)
        reduced = precision != "fp32"
        manifest = _manifest(
            prep,
            opts,
            fmt.file_names(stem, fallback=native),
            runtime,
            errors["relative_error"] if reduced else errors,
            report,
            form,
            gprec,
        )
        if reduced:
            manifest["verification"].update(
                errors,
                reference="fp32 gated graph (its PyTorch module)"
                if gprec == "int8"
                else "fp32 graph (its PyTorch module)",
            )
            if "quantization" in extra:
                manifest["quantization"] = extra["quantization"]
        if native:
            net = prep.graph(form, gprec)[0]
            types = int8_op_types(net) if gprec == "int8" else native_op_types(net)
            ops = [f"{NATIVE_DOMAIN}.{t}" for t in types]
            fallback_runtime = dict(checked[1][1])
            fallback_runtime.pop("quantization", None)
            manifest["native_op"] = {
                "op": ops[0],
                "ops": ops,
                "gate": opts.native_gate,
                "shortcut": opts.native_shortcut if opts.native_gate == "op" else "graph",
                "blocks": manifest["dynamic_skipping"]["blocks"],
                "library": native_ops.check_library(fmt.runtime, paths[0][1][0]),
                "fallback_form": paths[1][0],
                "fallback_runtime": fallback_runtime,
            }
            if reduced:
                manifest["verification"]["fallback"] = checked[1][0]
                if "quantization" in checked[1][2]:
                    manifest["native_op"]["fallback_quantization"] = {
                        k: v for k, v in checked[1][2]["quantization"].items() if k in ("format", "accumulation")
                    }
            else:
                manifest["verification"]["fallback_relative_error"] = checked[1][0]
        if opts.graph == "dynamic" and opts.record_inputs > 0:
            manifest["per_input"] = prep.per_input_macs(progress, form, gprec)
        if opts.graph == "static" and opts.knn_check:
            if prep.agreement is None:  # the same for every format: computed once
                prep.agreement = static_agreement(prep, progress)
            manifest["agreement"] = prep.agreement
        publish(out, stem, fmt.name, staged, manifest)
    return manifest


def _manifest(
    prep: Prepared,
    opts: ExportOptions,
    files: dict,
    runtime: dict,
    errors: dict,
    report: dict,
    form: str | None,
    graph_precision: str = "fp32",
) -> dict:
    import onnx

    cfg = prep.model.cfg
    train_cfg = prep.meta.get("train_config", {})
    spec = prep.graph(form, graph_precision)[1]
    return {
        "gatekit_version": __version__,
        "checkpoint": str(prep.checkpoint),
        "checkpoint_sha256": prep.meta["sha256"],
        "method": train_cfg.get("method"),
        "budget": train_cfg.get("budget"),
        "graph": opts.graph,
        "dynamic_form": form,
        "dynamic_skipping": (
            {"min_size": prep.min_size(form), "blocks": spec.skipping} if opts.graph == "dynamic" else None
        ),
        "format": opts.fmt,
        "files": files,
        "precision": precision_of(opts),
        "model_config": cfg.to_dict(),
        "widths": spec.widths,
        "full_widths": [b.planes for b in prep.cost.blocks],
        "channels": spec.channels,
        "pruning": {"calib": opts.calib, "min_usage": opts.min_usage, "round_to": opts.round_to}
        if opts.graph in ("static", "hybrid")
        else None,
        "pruned": ({k: v for k, v in prep.pruned.items() if k != "channels"} if prep.pruned is not None else None),
        "gate_usage": prep.gate_usage(),
        "macs": prep.flops(form, graph_precision),
        "input": {
            "name": INPUT_NAME,
            "shape": [-1 if opts.dynamic_batch else opts.batch, 3, cfg.input_size, cfg.input_size],
            "dtype": "float32",
            "layout": "NCHW",
            "scale": 1 / 255,
            "mean": list(prep.mean),
            "std": list(prep.std),
            "dataset": prep.dataset,
            "data_dir": prep.data_root,
        },
        "output": {"name": prep.output_name, "probe": opts.probe},
        "opset": OPSET,
        "onnx_version": onnx.__version__,
        "runtime": runtime,
        "verification": {
            "images": len(prep.verify_images),
            "relative_error": errors,
            "reference": "static module"
            if opts.graph == "static"
            else ("dense path" if opts.graph == "dense" else "gated path"),
            **report,
        },
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
        return [
            extract_features(module, images, prep.mean, prep.std, path, progress=progress).features
            for images in (train.images, test.images)
        ]

    def knn(feats):
        return knn_accuracy(feats[0], ytr, feats[1], yte, k=20, metric="cosine", num_classes=k)

    gated = features(prep.model, "gated")
    static = features(_StaticAsBackbone(prep.net), "dense")
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
            channels = select_all(prep.usage, prep.calib_n, candidate, prep.opts.round_to, prep.model.cfg.gate_group)
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
