"""`gatekit export` (a checkpoint's graphs, verified against PyTorch) and `gatekit engine` (a TensorRT engine
built on the device from an exported ONNX artifact, without torch)."""

from __future__ import annotations

from pathlib import Path

import click

from gatekit.cli.options import apply_trust_edited, parse_choices, trust_edited_option, write_json_if_asked
from gatekit.clitypes import NON_NEGATIVE, UNIT, count
from gatekit.paths import check_outputs


@click.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--graph",
    "graphs",
    default="dense",
    show_default=True,
    help="dense, static, hybrid, dynamic, a comma list, or all.",
)
@click.option(
    "--format",
    "formats",
    default="onnx",
    show_default=True,
    help="onnx, openvino, tensorrt, a comma list, or all (the formats available on this machine).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Directory for the artifacts and manifests.")
@click.option(
    "--calib",
    default=2000,
    show_default=True,
    type=count(),
    help="Training images whose gate usage decides the static/hybrid channels.",
)
@click.option(
    "--min-usage",
    default=0.0,
    show_default=True,
    type=UNIT,
    help="Remove channels on for at most this fraction of calibration images.",
)
@click.option(
    "--round-to",
    default=16,
    show_default=True,
    type=count(),
    help="Round kept widths up to a multiple of this (1 disables).",
)
@click.option(
    "--probe", type=click.Path(), help="A linear probe from `gatekit eval --linear`: the graph outputs logits."
)
@click.option("--batch", default=1, show_default=True, type=count(), help="Batch size of the exported graph.")
@click.option("--dynamic-batch", is_flag=True, help="A dynamic batch axis (verified at --batch and at 8).")
@click.option(
    "--precision",
    "precisions",
    default="fp32",
    show_default=True,
    help="fp32, fp16, bf16, int8 or a comma list. int8: post-training quantization calibrated on real training "
    "images (ONNX Runtime QDQ; NNCF for OpenVINO; dynamic graphs: gatekit's int8 ops, or Q/DQ standard "
    "ops, for ONNX and OpenVINO); fp16 and bf16: OpenVINO's inference precision (fp16 "
    "also compresses the IR's weights) or a TensorRT fp16 engine. Reduced precisions are verified by "
    "feature cosine and k-NN against fp32 and refused past --min-cosine / --max-knn-drop.",
)
@click.option("--fp16", is_flag=True, help="The same as --precision fp16.")
@click.option(
    "--quant-calib",
    default=300,
    show_default=True,
    type=click.IntRange(min=1),
    help="int8: training images (the first of the calibration set) that calibrate the quantizer.",
)
@click.option(
    "--quant-exclude",
    default="",
    help="int8: parts kept in float, comma list of stem, last, head, blockN "
    "(an int8 dynamic graph keeps its stem, gates and head in float always).",
)
@click.option(
    "--knn-test",
    default=10000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Reduced precision: test images of the k-NN check (memory: --knn-train training images).",
)
@click.option(
    "--min-cosine",
    default=0.99,
    show_default=True,
    type=UNIT,
    help="Reduced precision: refuse when the mean feature cosine to fp32 is below this.",
)
@click.option(
    "--max-knn-drop",
    default=1.0,
    show_default=True,
    type=NON_NEGATIVE,
    help="Reduced precision: refuse when k-NN top-1 is this many points below fp32.",
)
@click.option(
    "--verify-images",
    default=64,
    show_default=True,
    type=count(32),
    help="Held-out real images for verification (at least 32).",
)
@click.option(
    "--knn-train",
    default=10000,
    show_default=True,
    type=count(),
    help="Training images used as k-NN memory for the static agreement check.",
)
@click.option(
    "--record-inputs",
    default=1000,
    show_default=True,
    type=count(0),
    help="dynamic: record per-input MACs of the first N test images.",
)
@click.option(
    "--dynamic-form",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "native", "conv", "matmul", "qdq"]),
    help="dynamic: native = one gatekit custom op per block (its form: --native-gate; run by the op library that "
    "`gatekit ops build` builds; a standard-ops fallback is written beside it); conv (NonZero + Gather + "
    "Conv) or matmul (im2col + MatMul, for OpenVINO) in standard ops; qdq (int8: Q/DQ around whole "
    "convs, the mask a Mul) in standard ops; auto = native where its library is built for the format's "
    "runtime (with the int8 ops for --precision int8).",
)
@click.option(
    "--native-gate",
    default="op",
    show_default=True,
    type=click.Choice(["op", "graph"]),
    help="dynamic, native form: each block's gate inside its node (op: gatekit.GatedBlockWithGate) or in "
    "standard ops that feed gatekit.GatedBlock its mask (graph: the earlier form).",
)
@click.option(
    "--native-shortcut",
    default="op",
    show_default=True,
    type=click.Choice(["op", "graph"]),
    help="dynamic, native form with --native-gate op: each projection shortcut (1x1 conv) inside its block's "
    "node (op: gatekit.GatedBlockWithGateAndShortcut) or a Conv node before it (graph: the earlier form).",
)
@click.option(
    "--dynamic-min-size",
    type=click.IntRange(min=0),
    help="dynamic: only blocks whose output is at least this many pixels a side skip channels; the others "
    "run whole convs and zero the inactive channels (0: every block skips, the paper's form). "
    "Default: 0 for the native form, 8 for the standard-ops forms.",
)
@click.option(
    "--data-dir", type=click.Path(), help="Default: the training one, then $GATEKIT_DATA, then ~/.cache/gatekit/data."
)
@click.option("--threads", type=count(), help="Runtime threads during verification.")
@click.option("--json", "json_path", type=click.Path(), help="Write all manifests as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def export_cmd(
    checkpoint,
    graphs,
    formats,
    out_dir,
    calib,
    min_usage,
    round_to,
    probe,
    batch,
    dynamic_batch,
    precisions,
    fp16,
    quant_calib,
    quant_exclude,
    knn_test,
    min_cosine,
    max_knn_drop,
    verify_images,
    knn_train,
    record_inputs,
    dynamic_form,
    native_gate,
    native_shortcut,
    dynamic_min_size,
    data_dir,
    threads,
    json_path,
    quiet,
):
    """Export a checkpoint's graphs, each verified in its runtime against PyTorch before it is written.

    \b
    Example:
      gatekit export runs/dual --graph static,hybrid --format onnx,openvino --out artifacts/dual
      gatekit export runs/dual --graph all --format all --out artifacts/dual --json artifacts/dual/export.json
    """
    check_outputs(files={"--json": json_path}, dirs={"--out": out_dir})
    from gatekit.artifacts import FORMATS
    from gatekit.export.exporter import PRECISIONS
    from gatekit.export.graphs import GRAPHS
    from gatekit.export.sweep import export_all
    from gatekit.runtimes import available_formats

    graph_list = parse_choices(graphs, GRAPHS, "graph")
    format_list = available_formats() if formats == "all" else parse_choices(formats, tuple(FORMATS), "format")
    precision_list = ["fp16"] if fp16 else parse_choices(precisions, PRECISIONS, "precision")
    explicit = graphs != "all" and formats != "all" and len(precision_list) == 1

    def show(m):
        v = m["verification"]
        check = (
            f"max rel err {max(v['relative_error'].values()):.2e}"
            if m["precision"] == "fp32"
            else f"cosine to fp32 {v['cosine_to_fp32']['mean']:.4f}, k-NN {v['knn_delta_points']:+.2f} points"
        )
        if "gate_agreement" in v:
            check += f", gate decisions {100 * v['gate_agreement']['decisions']:.2f}% as fp32"
        click.echo(
            f"{m['graph']:8s} {m['format']:9s} {m['precision']:5s} widths {m['widths']}  MACs "
            f"x{m['macs']['ratio_to_dense']:.3f}  {check}  -> {Path(out_dir) / next(iter(m['files'].values()))}"
        )
        if "agreement" in m:
            a = m["agreement"]
            click.echo(
                f"{'':19s}k-NN k=20: static {100 * a['knn20_static']:.2f} vs gated {100 * a['knn20_gated']:.2f} "
                f"({a['knn20_difference_points']:+.2f} points)"
            )
            if not a["within_1_point"]:
                closing = a.get("min_usage_that_closes_it")
                click.echo(
                    f"{'':19s}more than 1 point off: "
                    + (
                        f"--min-usage {closing} closes it"
                        if closing is not None
                        else "no lower --min-usage closes it; ship the hybrid graph for the gated accuracy"
                    )
                )

    results, failures = export_all(
        checkpoint,
        out_dir,
        graphs=graph_list,
        formats=format_list,
        precisions=precision_list,
        strict=explicit,
        on_result=show,
        quant_calib=quant_calib,
        quant_exclude=tuple(x.strip() for x in quant_exclude.split(",") if x.strip()),
        knn_test=knn_test,
        min_cosine=min_cosine,
        max_knn_drop=max_knn_drop,
        on_failure=lambda g, f, e: click.echo(f"{g:8s} {f:9s} NOT EXPORTED: {e}", err=True),
        progress=not quiet,
        calib=calib,
        min_usage=min_usage,
        round_to=round_to,
        probe=probe,
        batch=batch,
        dynamic_batch=dynamic_batch,
        verify_images=verify_images,
        knn_train=knn_train,
        record_inputs=record_inputs,
        dynamic_form=dynamic_form,
        native_gate=native_gate,
        native_shortcut=native_shortcut,
        dynamic_min_size=dynamic_min_size,
        data_dir=data_dir,
        threads=threads,
    )
    for m in results:
        m.pop("manifest_path", None)
    write_json_if_asked(json_path, {"artifacts": results, "not_exported": failures})


@click.command("engine")
@click.argument("artifact", type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Where the engine and its manifest go.")
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="int8: from an int8 (QDQ) ONNX artifact, with the scales it was calibrated with.",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    help="Real images for the check (default: the manifest's, then $GATEKIT_DATA, then ~/.cache/gatekit/data).",
)
@click.option("--json", "json_path", type=click.Path(), help="Write the engine's manifest as JSON here too.")
@trust_edited_option
def engine_cmd(artifact, out_dir, precision, data_dir, json_path, trust_edited):
    """Build a TensorRT engine on this device from an exported ONNX artifact (no torch needed).

    Engines are tied to their GPU and TensorRT version, so build them where they run (a Jetson, say)
    from the ONNX artifacts that `gatekit export` wrote and verified elsewhere. The engine is checked
    against ONNX Runtime on the same real images before it is written.

    \b
    Example (on the Jetson):
      gatekit engine artifacts/td0.3/static.onnx.json --precision fp16 --out artifacts/td0.3-trt
    """
    check_outputs(files={"--json": json_path}, dirs={"--out": out_dir})
    apply_trust_edited(trust_edited)
    from gatekit.runtimes.tensorrt_build import engine_from_artifact

    m = engine_from_artifact(artifact, out_dir, precision=precision, data_dir=data_dir)
    err = m["verification"]["relative_error"]
    click.echo(
        f"{Path(out_dir) / m['files']['engine']}: {m['graph']} t_d={m.get('budget')} {precision}, "
        f"relative error against ONNX Runtime {max(err.values()):.1e}"
    )
    write_json_if_asked(json_path, m)
