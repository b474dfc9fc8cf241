"""`gatekit bench`, `gatekit accuracy` and `gatekit report`: measure exported artifacts on this device and
merge the results of several devices. Torch only for `gatekit bench --sweep` (it exports first) and for
`--runtime torch` (the reference runtime)."""

from __future__ import annotations

from pathlib import Path

import click

from gatekit.cli.options import apply_trust_edited, parse_choices, trust_edited_option, write_json_if_asked
from gatekit.clitypes import NON_NEGATIVE, IntList, count
from gatekit.errors import GatekitError
from gatekit.paths import check_outputs


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--runtime",
    "runtimes",
    default="auto",
    show_default=True,
    help="torch, ort, openvino, tensorrt, a comma list, or auto (each artifact's own runtime).",
)
@click.option("--threads", default="1,2", show_default=True, type=IntList(1), help="Thread counts, comma-separated.")
@click.option("--batch", default=1, show_default=True, type=count())
@click.option(
    "--inputs", "n_inputs", default=256, show_default=True, type=count(), help="Real test images cycled as inputs."
)
@click.option("--data-dir", type=click.Path(), help="Default: $GATEKIT_DATA, then ~/.cache/gatekit/data.")
@click.option("--warmup-runs", default=50, show_default=True, type=count(0))
@click.option("--warmup-seconds", default=0.2, show_default=True, type=NON_NEGATIVE)
@click.option("--min-runs", default=1000, show_default=True, type=count(), help="Stop after this many timed runs ...")
@click.option(
    "--min-seconds",
    default=10.0,
    show_default=True,
    type=NON_NEGATIVE,
    help="... or after this many seconds, whichever comes first.",
)
@click.option(
    "--ops",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "native", "fallback"]),
    help="Graphs with native custom ops: run them on the op library (native), on their standard-ops "
    "fallback, or on the library where it is built (auto). Records say which ran.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="ARTIFACTS are checkpoints: export every graph to every available format into --out, then benchmark them all.",
)
@click.option("--out", "out_dir", type=click.Path(), help="With --sweep: artifacts go to OUT/<checkpoint name>/.")
@click.option(
    "--json", "json_path", type=click.Path(), help="Append the records (JSON lines, schema gatekit.bench/1) here."
)
@click.option(
    "--table",
    "table_path",
    type=click.Path(),
    help="Write the Markdown table here (a row per network and "
    "graph; latency ratios to the same network's dense graph, which needs the dense graph benchmarked too).",
)
@click.option("--plot", "plot_path", type=click.Path(), help="Write latency ratio against FLOPs ratio (PNG) here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@trust_edited_option
def bench_cmd(
    artifacts,
    runtimes,
    threads,
    batch,
    n_inputs,
    data_dir,
    warmup_runs,
    warmup_seconds,
    min_runs,
    min_seconds,
    ops,
    sweep,
    out_dir,
    json_path,
    table_path,
    plot_path,
    quiet,
    trust_edited,
):
    """Measure latency of exported artifacts on this device, with one protocol for every runtime.

    Warm-up (>= 50 runs and >= 0.2 s), then >= 1,000 runs or >= 10 s; p50/p90/p99, mean, std, min and
    throughput; the headline is p90 at batch 1 (MLPerf SingleStream). Dynamic graphs also record
    per-input latency against per-input FLOPs.

    \b
    Examples:
      gatekit bench artifacts/dual/*.onnx artifacts/dual/*.xml --threads 1,2 \\
          --json bench.jsonl --table bench.md --plot bench.png
      gatekit bench --sweep runs/td0.1 runs/td0.3 runs/td0.5 --out artifacts --json sweep.jsonl
    """
    check_outputs(
        files={"--json": json_path, "--table": table_path, "--plot": plot_path},
        dirs={"--out": out_dir if sweep else None},
    )
    apply_trust_edited(trust_edited)
    from gatekit.bench.protocol import Protocol
    from gatekit.bench.run import write_jsonl
    from gatekit.bench.sweep import bench_manifests
    from gatekit.bench.tables import markdown_table, plot_latency_vs_flops, plot_per_input
    from gatekit.runtimes import get_backend
    from gatekit.sysinfo import machine_info

    thread_list = list(threads)  # IntList: integers >= 1
    wanted = None if runtimes == "auto" else [r.strip() for r in runtimes.split(",") if r.strip()]
    for r in wanted or []:
        get_backend(r)  # unknown or missing runtimes fail before any measurement
    protocol = Protocol(warmup_runs, warmup_seconds, min_runs, min_seconds)
    paths = list(artifacts)
    if sweep:
        if not out_dir:
            raise GatekitError("--sweep needs --out DIR for the exported artifacts")
        from gatekit.export.sweep import export_all

        paths = []
        for ckpt in artifacts:
            name = Path(ckpt).stem if Path(ckpt).suffix else Path(ckpt).name
            manifests, _ = export_all(
                ckpt,
                Path(out_dir) / name,
                data_dir=data_dir,
                progress=not quiet,
                batch=batch,
                on_result=_echo_exported(ckpt),
                on_failure=_echo_refused(ckpt),
            )
            paths += [m["manifest_path"] for m in manifests]
    records = bench_manifests(
        paths,
        thread_list,
        protocol,
        batch=batch,
        n_inputs=n_inputs,
        data_dir=data_dir,
        runtimes=wanted,
        progress=not quiet,
        ops=ops,
    )
    if not records:
        raise GatekitError("nothing to run: no artifact matches the runtimes asked for")
    if json_path:
        write_jsonl(json_path, records)
    table = markdown_table(records)
    click.echo("\n" + table)
    if table_path:
        from gatekit.atomic import write_text

        write_text(table_path, table + "\n")
    if plot_path:
        plot_latency_vs_flops(records, plot_path, title=machine_info()["cpu"])
        if any(r.get("per_input") for r in records):
            plot_per_input(records, Path(plot_path).with_name(Path(plot_path).stem + "-per-input.png"))


def _echo_exported(checkpoint):
    def echo(m):
        err = max(m["verification"]["relative_error"].values())
        click.echo(
            f"  {Path(checkpoint).name} t_d={m['budget']} {m['graph']:8s} {m['format']:9s} "
            f"MACs x{m['macs']['ratio_to_dense']:.3f}  max rel err {err:.1e}"
        )

    return echo


def _echo_refused(checkpoint):
    return lambda graph, fmt, e: click.echo(
        f"  {Path(checkpoint).name} {graph:8s} {fmt:9s} NOT EXPORTED: {e}", err=True
    )


@click.command("accuracy")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--runtime",
    "runtimes",
    default="auto",
    show_default=True,
    help="ort, openvino, tensorrt, a comma list, or auto (each artifact's own runtime).",
)
@click.option("--threads", type=count(), help="Runtime threads (default: the runtime's).")
@click.option(
    "--ops",
    type=click.Choice(["auto", "native", "fallback"]),
    default="auto",
    show_default=True,
    help="A graph with native ops: the op library, its standard-ops fallback, or the library where built.",
)
@click.option(
    "--train-images", type=count(), help="The first N training images as the memory / probe set (default: all)."
)
@click.option("--test-images", type=count(), help="The first N test images (default: all).")
@click.option(
    "--linear/--no-linear",
    default=True,
    show_default=True,
    help="Also fit the linear probe on the artifact's features.",
)
@click.option(
    "--data-dir", type=click.Path(), help="Directory with the data (default: the manifest's, then $GATEKIT_DATA)."
)
@click.option(
    "--out", "out_path", required=True, type=click.Path(), help="Append one JSON line per artifact and runtime here."
)
@trust_edited_option
def accuracy_cmd(
    artifacts, runtimes, threads, ops, train_images, test_images, linear, data_dir, out_path, trust_edited
):
    """Accuracy of exported artifacts on their own outputs, in their runtime (no torch).

    k-NN top-1 (k=20, cosine) of the test images against the training images as memory, and a
    linear probe on the same features: what `gatekit compare` and `gatekit pick` read beside latency.

    \b
    Example:
      gatekit accuracy runs/td0.3/static.onnx.manifest.json --threads 2 --out runs/accuracy.jsonl
    """
    from gatekit.artifacts import RUNTIMES, open_artifact
    from gatekit.bench.accuracy import measure_accuracy
    from gatekit.bench.run import write_jsonl

    check_outputs(files={"--out": out_path})
    apply_trust_edited(trust_edited)

    for path in artifacts:
        art = open_artifact(path)
        for rt in [art.runtime] if runtimes == "auto" else parse_choices(runtimes, tuple(RUNTIMES), "runtime"):
            rec = measure_accuracy(
                art,
                rt,
                threads=threads,
                ops=ops,
                train_images=train_images,
                test_images=test_images,
                data_dir=data_dir,
                linear=linear,
            )
            write_jsonl(out_path, [rec])
            lin = f", linear {100 * rec['linear']['top1']:.2f}%" if "linear" in rec else ""
            click.echo(
                f"{rec['artifact']} on {rt}: k-NN {100 * rec['knn']['top1']:.2f}%{lin} "
                f"({rec['train_images']} train / {rec['test_images']} test images, {rec['embed_seconds']} s)"
            )


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_path", required=True, type=click.Path(), help="The Markdown page.")
@click.option("--html", "html_path", type=click.Path(), help="Also write the page as HTML here.")
@click.option("--plots-dir", type=click.Path(), help="Where the PNGs go (default: beside --out, in OUT-plots/).")
@click.option(
    "--json", "json_path", type=click.Path(), help="Write the targets, their tables and plot paths as JSON here."
)
@trust_edited_option
def report_cmd(results, out_path, html_path, plots_dir, json_path, trust_edited):
    """Merge benchmark results from several devices into one page: a section per target.

    A target is the machine a record was measured on (CPU model and cores, GPU, Jetson board and power
    mode). Each has the table of `gatekit bench` (a row per network and graph, a network being one checkpoint
    of one architecture, width, input size and gate group; FLOPs ratio; p50 / p90 and the latency ratio to
    that network's own dense graph per runtime, precision, threads and batch) and a PNG of latency ratio
    against FLOPs ratio, a marker per network. A record whose network has no dense graph measured shows
    its latency without a ratio, and the page says why.

    \b
    Example:
      gatekit report benchmarks/bench_cpu/*.jsonl jetson-orin.jsonl h100.jsonl \\
          --out report/edge.md --html report/edge.html --json report/edge.json
    """
    check_outputs(files={"--out": out_path, "--html": html_path, "--json": json_path}, dirs={"--plots-dir": plots_dir})
    from gatekit.bench.report import build_report

    summary = build_report(list(results), out_path, plots_dir=plots_dir, html_path=html_path, trust_edited=trust_edited)
    for t in summary["targets"]:
        click.echo(f"{t['records']:4d} records  {t['target']}  -> {t['plot']}")
    click.echo(f"page: {summary['page']}" + (f"  html: {summary['html']}" if summary["html"] else ""))
    write_json_if_asked(json_path, summary)
