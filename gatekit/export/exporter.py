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
from gatekit.export.accuracy_checks import static_agreement, torch_check, verify, verify_reduced
from gatekit.export.build import Graphs
from gatekit.export.calibration import GateUsage, Int8Calibration
from gatekit.export.graphs import GRAPHS, native_op_types
from gatekit.export.int8 import int8_op_types
from gatekit.export.macs import graph_macs, per_input_macs
from gatekit.models import cost_model

OPSET = 17
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
NATIVE_DOMAIN = native_ops.DOMAIN
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
    """What the formats of one graph share: the checkpoint, its data and held-out verification images, the optional
    probe head, the gate usage and int8 calibration (gatekit.export.calibration) and the deploy modules built from
    them (gatekit.export.build, `graphs`). The checks against the PyTorch path are gatekit.export.accuracy_checks;
    the MACs, gatekit.export.macs."""

    def __init__(
        self, checkpoint: str | Path, opts: ExportOptions, progress: bool = True, recorded_usage: dict | None = None
    ):
        """`recorded_usage`: a static or hybrid graph's channels come from this gate usage (an earlier
        export manifest's `gate_usage` of the same checkpoint) instead of a new calibration pass."""
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
        self.data_root = opts.data_dir or recorded_dir(train_cfg.get("data_dir"))
        self.mean, self.std = normalization(self.dataset)
        cfg = self.model.cfg
        self.cost = cost_model(cfg)
        n_verify = max(32, opts.verify_images)
        n_verify -= n_verify % max(opts.batch, 8 if opts.dynamic_batch else 1)
        self.verify_images = self.images("test", n_verify)
        self.usage: GateUsage | None = None
        if recorded_usage is not None and opts.graph in ("static", "hybrid"):
            self.usage = GateUsage.from_record(recorded_usage, self.model)
        elif opts.graph != "dense":
            calib = load_dataset(self.dataset, "train", self.data_root, limit=opts.calib, image_size=cfg.input_size)
            self.usage = GateUsage.measure(self.model, calib.images, self.mean, self.std, progress)
        channels = None
        if self.usage is not None and opts.graph in ("static", "hybrid"):
            channels = self.usage.channels(opts.min_usage, opts.round_to, cfg.gate_group)
        if self.pruned is not None:
            channels = _pruned_channels(checkpoint, self.pruned, self.model.blocks)
        self.head = _load_head(opts.probe, self.model.feature_dim)
        self.int8_calibration = Int8Calibration(
            opts, len(self.model.blocks), self.dataset, lambda n: self.images("train", n)
        )
        self.knn_sets: tuple | None = None  # reduced-precision k-NN check: images, labels, fp32 features
        self._build(channels)

    def images(self, split: str, limit: int | None) -> np.ndarray:
        """The first `limit` images of a split of the checkpoint's dataset, normalized, NCHW float32."""
        data = load_dataset(self.dataset, split, self.data_root, limit=limit, image_size=self.model.cfg.input_size)
        return normalize_images(data.images, self.mean, self.std)

    def gate_usage(self) -> dict | None:
        """The manifest's `gate_usage` (None for a dense graph, which measures none)."""
        return None if self.usage is None else self.usage.record(self.dataset)

    def reselect(self, min_usage: float) -> None:
        """Static/hybrid: keep the channels on for more than `min_usage` of the calibration images, reusing
        the calibration already run (no second pass over the images)."""
        if self.opts.graph not in ("static", "hybrid"):
            raise ValueError("only static and hybrid graphs select channels")
        self.opts.min_usage = min_usage
        self._build(self.usage.channels(min_usage, self.opts.round_to, self.model.cfg.gate_group))

    def _build(self, channels: list[torch.Tensor] | None) -> None:
        self.graphs = Graphs(self.model, self.opts, channels, self.head, self.usage, self.int8_calibration)
        self.agreement: dict | None = None  # a static graph's accuracy_checks.static_agreement, once per build

    @property
    def output_name(self) -> str:
        return "logits" if self.head is not None else "features"


def _pruned_channels(checkpoint, pruned: dict, blocks) -> list[torch.Tensor]:
    """A pruned dense encoder's kept channels per block, from its checkpoint's 'pruned' record."""
    kept = pruned.get("channels")
    if (
        not isinstance(kept, list)
        or len(kept) != len(blocks)
        or not all(
            isinstance(c, list) and c and all(isinstance(i, int) and 0 <= i < b.planes for i in c)
            for c, b in zip(kept, blocks, strict=True)
        )
    ):
        raise GatekitError(
            f"{checkpoint}: the 'pruned' record's 'channels' must list kept channels for each of "
            f"its {len(blocks)} blocks"
        )
    return [torch.tensor(c, dtype=torch.long) for c in kept]


def _load_head(probe: str | None, feature_dim: int) -> torch.nn.Linear | None:
    """A linear probe (`gatekit eval --linear`) as the graph's head: its outputs become logits."""
    if not probe:
        return None
    from gatekit.evaluate.linear_probe import load_probe

    p = load_probe(probe)
    if p.weight.shape[1] != feature_dim:
        raise GatekitError(f"probe {probe} expects {p.weight.shape[1]}-d features, the model gives {feature_dim}")
    head = torch.nn.Linear(p.weight.shape[1], p.weight.shape[0])
    head.weight.data, head.bias.data = p.weight.float().clone(), p.bias.float().clone()
    return head


def _export_onnx(prep: Prepared, path: Path, form: str | None) -> None:
    import onnx

    opts = prep.opts
    net = prep.graphs.graph(form, graph_precision(opts))[0]
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

        calib = prep.int8_calibration
        extra["quantization"] = dict(
            quantize_onnx(onnx_path, staged["onnx"], calib.batches(), calib.exclude_patterns()),
            calibration=calib.images_record(),
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

        calib = prep.int8_calibration
        converted, record = quantize_openvino(converted, calib.batches(), calib.exclude_patterns())
        extra["quantization"] = dict(record, calibration=calib.images_record())
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
    form = prep.graphs.dynamic_form(fmt.name, gprec)
    native = form == "native"
    # (form, extensions): the graph itself, and for a native-op graph its standard-ops fallback too
    paths = [(form, (str(native_ops.library_for(fmt.runtime)),) if native else ())]
    if native:
        paths.append((prep.graphs.standard_form(fmt.name, gprec), ()))
    report = torch_check(prep, form, gprec)
    if native and gprec == "fp32":
        report["fallback"] = torch_check(prep, paths[1][0])
    stem = artifact_stem(opts)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp)
        staged = {key: tmp / name for key, name in fmt.file_names(stem, fallback=native).items()}
        checked = []
        for i, (f, extensions) in enumerate(paths):
            onnx_path = tmp / f"traced-{f or opts.graph}.onnx"
            _export_onnx(prep, onnx_path, f)
            prefix = FALLBACK_PREFIX if i else ""
            quantized = prep.graphs.int8_record(f) if gprec == "int8" else None
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
                    verify(prep, session, label, precision)
                    if precision == "fp32"
                    else verify_reduced(prep, session, label, precision)
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
            net = prep.graphs.graph(form, gprec)[0]
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
            manifest["per_input"] = per_input_macs(prep, progress, form, gprec)
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
    spec = prep.graphs.graph(form, graph_precision)[1]
    return {
        "gatekit_version": __version__,
        "checkpoint": str(prep.checkpoint),
        "checkpoint_sha256": prep.meta["sha256"],
        "method": train_cfg.get("method"),
        "budget": train_cfg.get("budget"),
        "graph": opts.graph,
        "dynamic_form": form,
        "dynamic_skipping": (
            {"min_size": prep.graphs.min_size(form), "blocks": spec.skipping} if opts.graph == "dynamic" else None
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
        "macs": graph_macs(prep, form, graph_precision),
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
