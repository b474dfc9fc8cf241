"""`gatekit profile`, `gatekit pick` and `gatekit compare`: this device's latency table, the budget that meets a
latency target, and every family's accuracy against latency. No torch, except `gatekit pick --export-to`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from gatekit.cli.options import apply_trust_edited, trust_edited_option, write_json_if_asked
from gatekit.clitypes import FRACTION, NON_NEGATIVE, POSITIVE, WIDTH, FiniteFloatRange, count
from gatekit.errors import GatekitError
from gatekit.paths import check_outputs


@click.command("profile")
@click.option("--runtime", default="ort", show_default=True, help="ort, openvino or tensorrt.")
@click.option("--arch", default="resnet18", show_default=True, type=click.Choice(["resnet18", "resnet34"]))
@click.option(
    "--width", default=1.0, show_default=True, type=WIDTH, help="Width multiplier of the checkpoints it will predict."
)
@click.option(
    "--input",
    "input_size",
    default=32,
    show_default=True,
    type=count(8),
    help="Input size: 32 (CIFAR stem), 96 (STL-10 stem), 224.",
)
@click.option("--stem", type=click.Choice(["cifar", "imagenet"]), help="Default: cifar at 32 px, imagenet otherwise.")
@click.option("--stem-padding", type=count(0), help="Default: 2 for the cifar stem (the paper's), 3 for imagenet.")
@click.option(
    "--threads", default=1, show_default=True, type=count(), help="Runtime threads (one LUT per thread count)."
)
@click.option(
    "--round-to", default=16, show_default=True, type=count(), help="Width step of the table (export's --round-to)."
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
    help="int8: every graph quantized as `gatekit export --precision int8` does (ORT QDQ; NNCF for OpenVINO; "
    "with --native, gatekit's int8 op, as int8 dynamic graphs run it).",
)
@click.option("--device", help="Runtime device (OpenVINO: CPU or GPU; default CPU / the first GPU).")
@click.option(
    "--check",
    default=20,
    show_default=True,
    type=count(0),
    help="Held-out random width configurations to predict and measure.",
)
@click.option(
    "--native/--no-native",
    default=None,
    help="Also time the native gated-block op (gate inside; --precision int8: the int8 op) at active widths, "
    "so the LUT predicts native dynamic graphs of that precision per input (default: when `gatekit ops "
    "build` has built its library, with the int8 ops for int8, for the runtime).",
)
@click.option(
    "--native-masks",
    default=2,
    show_default=True,
    type=count(),
    help="Random channel sets of each active width that the native op's timings rotate through, one per input (the "
    "weights a deployed dynamic graph reads change call to call); 1: one fixed set.",
)
@click.option(
    "--dataset", default="cifar10", show_default=True, help="Real test images for whole networks (resized to --input)."
)
@click.option("--data-dir", type=click.Path(), help="Default: $GATEKIT_DATA, then ~/.cache/gatekit/data.")
@click.option(
    "--min-runs",
    default=400,
    show_default=True,
    type=count(),
    help="Table entries: stop after this many timed runs ...",
)
@click.option(
    "--min-seconds",
    default=1.5,
    show_default=True,
    type=NON_NEGATIVE,
    help="... or after this many seconds, whichever comes first.",
)
@click.option("--seed", default=0, show_default=True, type=count(0))
@click.option("--out", "out_path", required=True, type=click.Path(), help="Where the LUT (JSON) goes.")
@click.option(
    "--plot", "plot_path", type=click.Path(), help="Predicted against measured latency of the held-out networks (PNG)."
)
@click.option(
    "--json", "json_path", type=click.Path(), help="Write a summary (validation shares, timings) as JSON here."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def profile_cmd(
    runtime,
    arch,
    width,
    input_size,
    stem,
    stem_padding,
    threads,
    round_to,
    precision,
    device,
    check,
    native,
    native_masks,
    dataset,
    data_dir,
    min_runs,
    min_seconds,
    seed,
    out_path,
    plot_path,
    json_path,
    quiet,
):
    """Build this device's latency table (LUT) of a gated ResNet, and check its predictions.

    Times the stem, the head and every block at every inner width (steps of --round-to) with the
    protocol of `gatekit bench`, calibrates the sum against whole networks, then predicts --check
    held-out width configurations and measures them (share within +-10% of p50 and p90). Minutes,
    not hours; torch is not needed.

    \b
    Example (ResNet-18 at 32 px, ONNX Runtime, 1 thread):
      gatekit profile --runtime ort --arch resnet18 --input 32 --threads 1 --out lut-ort-1t.json \\
          --plot lut-ort-1t.png
    """
    check_outputs(files={"--out": out_path, "--plot": plot_path, "--json": json_path})
    from gatekit.atomic import write_text
    from gatekit.bench.protocol import Protocol
    from gatekit.models.arch import Architecture
    from gatekit.pick.profile import PROFILE_PROTOCOL, ProfileOptions, plot_validation, profile, real_inputs
    from gatekit.runtimes import get_backend

    backend = get_backend(runtime)  # unknown or missing runtime: one line before any work
    if input_size < 8:
        raise GatekitError(f"--input must be at least 8, got {input_size}")
    shape = Architecture(arch, width, stem or ("cifar" if input_size <= 64 else "imagenet"), stem_padding, input_size)
    images = real_inputs(dataset, data_dir, input_size)
    protocol = Protocol(PROFILE_PROTOCOL.warmup_runs, PROFILE_PROTOCOL.warmup_seconds, min_runs, min_seconds)
    opts = ProfileOptions(
        runtime=backend.name,
        threads=threads,
        round_to=round_to,
        precision=precision,
        device=device,
        protocol=protocol,
        check=check,
        seed=seed,
        native=native,
        native_masks=native_masks,
    )
    bar = None if quiet else _progress_bar("profile")

    def progress(done, total, what):
        if bar is not None:
            bar.total = total
            bar.set_postfix_str(what)
            bar.update(done - bar.n)

    try:
        lut = profile(shape, opts, images, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    write_text(out_path, json.dumps(lut, indent=1) + "\n")
    v = lut["validation"]
    summary = {
        "lut": str(out_path),
        "runtime": lut["runtime"],
        "threads": threads,
        "arch": lut["arch"],
        "entries": sum(len(b["widths"]) for b in lut["blocks"]) + 2,
        "seconds": lut["seconds"],
        "calibration_fit": lut["calibration"]["fit"],
        **{k: v[k] for k in v if k != "configs"},
    }
    if v["count"]:
        click.echo(
            f"LUT: {summary['entries']} entries in {lut['seconds']:.0f} s -> {out_path}\n"
            f"held-out check: {v['count']} configurations, within +-10%: p50 {100 * v['within_tolerance_p50']:.0f}%, "
            f"p90 {100 * v['within_tolerance_p90']:.0f}% (median |error| p50 {100 * v['median_abs_error_p50']:.1f}%, "
            f"p90 {100 * v['median_abs_error_p90']:.1f}%)"
        )
    if "native" in lut:
        nv = lut["native"]["validation"]
        entries = sum(len(b["widths"]) for b in lut["native"]["blocks"])
        click.echo(
            f"native {lut['native']['precision']} op table: {entries} entries; held-out native "
            f"networks within +-10%: p50 {100 * nv['within_tolerance_p50']:.0f}%, "
            f"p90 {100 * nv['within_tolerance_p90']:.0f}%"
        )
    if plot_path and v["count"]:
        plot_validation(lut, plot_path)
    write_json_if_asked(json_path, summary)


def _progress_bar(desc: str):
    from tqdm import tqdm

    return tqdm(total=1, desc=desc, unit="graph", leave=False)


@click.command("pick")
@click.option("--target-ms", required=True, type=POSITIVE, help="The latency the device must meet.")
@click.option(
    "--percentile", default=90, show_default=True, type=click.Choice(["50", "90", "99"]), help="Latency percentile."
)
@click.option(
    "--results",
    "results",
    multiple=True,
    type=click.Path(),
    help="Benchmark records (JSON lines from `gatekit bench --json`); repeatable.",
)
@click.option(
    "--accuracy",
    "accuracy_files",
    multiple=True,
    type=click.Path(),
    help="`gatekit eval --json` outputs of the checkpoints; repeatable.",
)
@click.option("--metric", default="knn", show_default=True, type=click.Choice(["knn", "linear"]))
@click.option("--runtime", help="Only results of this runtime (ort, openvino, tensorrt, torch).")
@click.option("--threads", type=count(), help="Only results at this thread count.")
@click.option("--batch", type=count(), help="Only results at this batch size.")
@click.option(
    "--lut",
    "lut_path",
    type=click.Path(),
    help="A device LUT (`gatekit profile`): plan static widths for --checkpoint.",
)
@click.option(
    "--checkpoint", type=click.Path(), help="With --lut: the checkpoint whose channel-usage ranking gives the widths."
)
@click.option(
    "--usage",
    "usage_manifest",
    type=click.Path(),
    help="With --lut: an export manifest of the checkpoint (static, hybrid or dynamic) whose recorded gate "
    "usage ranks the channels: plans without torch and without a calibration pass.",
)
@click.option(
    "--export-to",
    type=click.Path(),
    help="With --lut: export the planned static graph here and measure it "
    "(needs the training side); without it, only the plan is printed.",
)
@click.option(
    "--margin",
    default=0.05,
    show_default=True,
    type=FiniteFloatRange(0, 1, max_open=True),
    help="With --lut: plan for the target less this fraction (predictor error).",
)
@click.option(
    "--accuracy-check/--no-accuracy-check",
    default=True,
    show_default=True,
    help="With --lut: measure the planned static graph's k-NN beside the gated path (minutes at full width).",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    help="With --lut: default: the checkpoint's, then $GATEKIT_DATA, then ~/.cache/gatekit/data.",
)
@click.option("--plot", "plot_path", type=click.Path(), help="Accuracy against latency with the target (PNG).")
@click.option("--json", "json_path", type=click.Path(), help="Write the choice and the candidates as JSON here.")
@trust_edited_option
def pick_cmd(
    target_ms,
    percentile,
    results,
    accuracy_files,
    metric,
    runtime,
    threads,
    batch,
    lut_path,
    checkpoint,
    usage_manifest,
    export_to,
    margin,
    accuracy_check,
    data_dir,
    plot_path,
    json_path,
    trust_edited,
):
    """Pick the most accurate option whose latency meets a target on this device.

    With --results: the most accurate recorded artifact whose measured latency meets the target. It
    exits with status 1 when nothing does, naming the fastest option and the margin.

    With --lut: static widths for a budget never exported. The checkpoint's channel usage (recorded in
    an export manifest, --usage, or measured from --checkpoint) ranks the channels; the smallest
    --min-usage whose *predicted* latency meets the target is planned. With --export-to it is exported
    (verified like every export), then *measured*; exit 1 if the measurement misses.

    \b
    Examples:
      gatekit pick --target-ms 0.35 --results bench.jsonl --accuracy runs/dual/eval.json --threads 1
      gatekit pick --target-ms 0.30 --lut lut-ort-1t.json --usage artifacts/dual/static.onnx.json
      gatekit pick --target-ms 0.30 --lut lut-ort-1t.json --checkpoint runs/dual --export-to artifacts/pick
    """
    check_outputs(files={"--plot": plot_path, "--json": json_path}, dirs={"--export-to": export_to})
    apply_trust_edited(trust_edited)
    pct = int(percentile)
    if lut_path:
        return _pick_with_lut(
            target_ms,
            pct,
            lut_path,
            checkpoint,
            usage_manifest,
            export_to,
            margin,
            accuracy_check,
            data_dir,
            plot_path,
            json_path,
        )
    if not results:
        raise GatekitError("pick needs --results BENCH.jsonl (recorded results) or --lut LUT.json with --checkpoint")
    from gatekit.bench.run import read_jsonl
    from gatekit.pick.select import RECORD_FIELDS, candidates, fallback_note, load_accuracies, pick, plot, table

    cands = candidates(
        read_jsonl(results, RECORD_FIELDS, edited_ok=trust_edited),
        load_accuracies(accuracy_files),
        metric=metric,
        percentile=pct,
        runtime=runtime,
        threads=threads,
        batch=batch,
    )
    note = fallback_note(cands)
    if note:
        click.echo(note, err=True)
    chosen, reason = pick(cands, target_ms)
    click.echo(table(cands, chosen, target_ms, pct))
    if plot_path:
        plot(cands, chosen, target_ms, pct, plot_path)
    write_json_if_asked(
        json_path,
        {
            "target_ms": target_ms,
            "percentile": pct,
            "metric": metric,
            "reason": reason,
            "chosen": chosen.to_dict() if chosen else None,
            "candidates": [c.to_dict() for c in cands],
        },
    )
    if chosen is None:
        click.echo(f"gatekit: {reason}", err=True)
        sys.exit(1)
    click.echo(f"\nchosen: {reason}")


def _pick_with_lut(
    target_ms,
    pct,
    lut_path,
    checkpoint,
    usage_manifest,
    export_to,
    margin,
    accuracy_check,
    data_dir,
    plot_path,
    json_path,
):
    from gatekit.pick.plan import plan_from_manifest, plot_plan
    from gatekit.pick.profile import load_lut

    if not checkpoint and not usage_manifest:
        raise GatekitError(
            "--lut needs --usage MANIFEST (an export manifest) or --checkpoint CKPT with --export-to DIR"
        )
    if not usage_manifest and not export_to:
        raise GatekitError(
            "--lut with --checkpoint needs --export-to DIR (or plan from --usage MANIFEST without torch)"
        )
    lut = load_lut(lut_path)
    key = f"p{pct}_ms"
    if not export_to:  # plan only: torch-free
        out = plan_from_manifest(lut, usage_manifest, target_ms, percentile=pct, margin=margin)
        c = out["chosen"]
        click.echo(
            f"planned static widths {c['widths']} (--min-usage {c['min_usage']:.4f}): predicted p{pct} "
            f"{c['predicted_' + key]:.3f} ms (LUT {lut['runtime']['name']} {lut['threads']}T), "
            f"target {target_ms:g} ms\n"
            f"export it with: gatekit export {out['checkpoint']} --graph static --format {out['format']} "
            f"--min-usage {c['min_usage']:.6g} --round-to {lut['round_to']} --out DIR"
        )
        write_json_if_asked(json_path, out)
        if plot_path:
            plot_plan(out, lut, plot_path)
        return
    from gatekit.chains import plan_export_measure

    out = plan_export_measure(
        lut,
        target_ms,
        export_to,
        checkpoint=checkpoint,
        usage_manifest=usage_manifest,
        percentile=pct,
        margin=margin,
        data_dir=data_dir,
        accuracy=accuracy_check,
    )
    c = out["chosen"]
    click.echo(
        f"planned static widths {c['widths']} (--min-usage {c['min_usage']:.4f}, MACs x{out['macs_ratio']:.3f}): "
        f"predicted p{pct} {c['predicted_' + key]:.3f} ms (LUT {lut['runtime']['name']} {lut['threads']}T)"
    )
    agreement = out.get("agreement") or {}
    if "knn20_static" in agreement:
        click.echo(
            f"k-NN20 of the static graph {100 * agreement['knn20_static']:.2f}% "
            f"(gated path {100 * agreement['knn20_gated']:.2f}%)"
        )
    verdict = "meets" if out["meets_target"] else "MISSES"
    click.echo(
        f"measured p{pct} {out['measured'][key]:.3f} ms ({out['measured']['runs']} runs): {verdict} the target "
        f"{target_ms:g} ms; prediction error {100 * out['prediction_error']:+.1f}%\nartifact: {out['artifact']}"
    )
    write_json_if_asked(json_path, out)
    if plot_path:
        plot_plan(out, lut, plot_path)
    if not out["meets_target"]:
        sys.exit(1)


@click.command("compare")
@click.option("--results", multiple=True, required=True, type=click.Path(), help="`gatekit bench` JSONL (repeatable).")
@click.option(
    "--accuracy",
    "accuracy_files",
    multiple=True,
    required=True,
    type=click.Path(),
    help="`gatekit accuracy` JSONL (repeatable): accuracy measured on the artifacts themselves.",
)
@click.option("--metric", type=click.Choice(["knn", "linear"]), default="knn", show_default=True)
@click.option("--percentile", type=click.Choice(["50", "90", "99"]), default="90", show_default=True)
@click.option(
    "--budget",
    type=FRACTION,
    default=0.3,
    show_default=True,
    help="t_d of the gatekit reference artifact (the fastest fp32 gatekit graph of that budget).",
)
@click.option(
    "--gate-group",
    type=count(),
    default=1,
    show_default=True,
    help="Gate group of the gatekit reference artifact (1: the paper's per-channel gates).",
)
@click.option("--name", default="compare", show_default=True, help="Stem of the files written.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Writes NAME.json, NAME.md and one PNG per runtime and thread count here.",
)
@trust_edited_option
def compare_cmd(results, accuracy_files, metric, percentile, budget, gate_group, name, out_dir, trust_edited):
    """Accuracy against measured latency for every family: gatekit, Torch-Pruning, dense, dense int8.

    Each family's Pareto front, and the headline per precision: the accuracy each alternative reaches on
    its front at the latency of gatekit's fastest t_d --budget artifact in fp32 (and in int8).

    \b
    Example:
      gatekit compare --results bench.jsonl --accuracy accuracy.jsonl --out runs/compare
    """
    from gatekit.atomic import write_json, write_text
    from gatekit.bench.accuracy import SCHEMA as ACCURACY_SCHEMA
    from gatekit.bench.run import read_jsonl
    from gatekit.pick.compare import compare, markdown, plot
    from gatekit.pick.select import ACCURACY_FIELDS, RECORD_FIELDS

    check_outputs(dirs={"--out": out_dir})
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise GatekitError(f"--name must be a plain file stem (letters, digits, '_', '.', '-'), got {name!r}")
    result = compare(
        read_jsonl(results, RECORD_FIELDS, edited_ok=trust_edited),
        read_jsonl(accuracy_files, ACCURACY_FIELDS, ACCURACY_SCHEMA),
        metric=metric,
        percentile=int(percentile),
        budget=budget,
        gate_group=gate_group,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(result)
    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", md + "\n")
    for g in result["groups"]:
        plot(g, result, out / f"{name}-{g['runtime']}-{g['threads']}t-b{g['batch']}.png")
    click.echo(md)
