"""What the IR's PrimitivesPriority request on the convolutions feeding a native op is worth on OpenVINO
(gatekit/runtimes/openvino_layout.py): the native dynamic IR of each budget compiled twice in one process, once
without the attribute (the plugin's own choice: channels-last brgconv for the stem, then its generic reorder to
the op's NCHW) and once with it (oneDNN's direct convolution, channel-blocked output, jit reorder), timed in
alternation. Deploy side only (no torch); uses the IRs of the set's last native_dynamic.py run.

Each (t_d, threads) runs `--cycles` cycles; a cycle runs both compiled models in alternating order, each for a
burst of `--burst` calls on consecutive test images (of 32, the same for both), keeping each burst's median.
The figures are the medians over cycles of the burst medians and of the per-cycle ratios; both compiled
models' outputs are compared on every image first (they must agree). Also per-layer counters of the stem,
its reorders and the pooling before the first op (OpenVINO's PERF_COUNT, median over 64 calls).

    python benchmarks/bench_cpu/openvino_layout_hint.py --set full32 [--threads 1,2] [--cycles 200] [--burst 4]

Writes benchmarks/bench_cpu/openvino-layout-hint-{set}.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

IMAGES = 32
HEAD_TYPES = ("Convolution", "Reorder", "MaxPool")  # the stem, its reorders, and a max-pooling stem's pool


def main() -> int:
    import numpy as np
    import openvino as ov
    from interleaved import last_run_items

    from gatekit import native_ops
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.atomic import write_json, write_text
    from gatekit.runtimes.openvino_backend import compile_config
    from gatekit.runtimes.openvino_layout import with_blocked_feeders
    from gatekit.sysinfo import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--set", dest="name", default="full32", help="x0.25, full32 or full96 (after native_dynamic.py --set NAME)"
    )
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--burst", type=int, default=4)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    items = last_run_items(args.name)
    lib = native_ops.library_for("openvino")
    if lib is None:
        sys.exit("the OpenVINO extension is not built: run `gatekit ops build`")
    irs = sorted(
        {
            (it["budget"], it["manifest"])
            for it in items
            if it["kind"] == "artifact" and it["graph"] == "dynamic" and it["format"] == "openvino"
        }
    )
    threads = [int(t) for t in args.threads.split(",")]
    core = ov.Core()
    core.add_extension(str(lib))
    loads = [os.getloadavg()[0]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gatekit-layout-") as tmp:
        for budget, manifest_path in irs:
            art = open_artifact(manifest_path)
            xml = art.file
            images, _ = load_inputs(art.manifest, IMAGES)
            inputs = [ov.Tensor(np.ascontiguousarray(images[i : i + 1])) for i in range(len(images))]
            # without: the IR with the attribute taken out; with: the attribute set as export sets it
            plain = Path(tmp) / f"td{budget}-without.xml"
            plain.write_text(re.sub(r' PrimitivesPriority="[^"]*"', "", xml.read_text()))
            os.symlink(xml.with_suffix(".bin").resolve(), plain.with_suffix(".bin"))
            models = {
                "without": core.read_model(str(plain)),
                "with": with_blocked_feeders(core, core.read_model(str(plain))),
            }
            for t in threads:
                reqs, head = {}, {}
                for label, model in models.items():
                    compiled = core.compile_model(model, "CPU", dict(compile_config("fp32", t, "CPU"), PERF_COUNT=True))
                    reqs[label] = compiled.create_infer_request()
                    head[label] = _head_counters(reqs[label], inputs)
                outs = {k: [_run(r, x).copy() for x in inputs] for k, r in reqs.items()}
                max_diff = max(float(np.abs(a - b).max()) for a, b in zip(outs["without"], outs["with"]))
                if max_diff > 1e-4:
                    sys.exit(f"t_d {budget}: the two compiled models disagree by {max_diff:.2g}")
                times = {k: [] for k in reqs}
                for c in range(args.cycles):
                    for label in ("without", "with") if c % 2 == 0 else ("with", "without"):
                        burst = []
                        for i in range(args.burst):
                            x = inputs[(c * args.burst + i) % len(inputs)]
                            t0 = time.perf_counter()
                            _run(reqs[label], x)
                            burst.append(time.perf_counter() - t0)
                        times[label].append(statistics.median(burst) * 1e3)
                ratios = [b / a for a, b in zip(times["without"], times["with"])]
                rows.append(
                    {
                        "budget": budget,
                        "threads": t,
                        "without_ms": statistics.median(times["without"]),
                        "with_ms": statistics.median(times["with"]),
                        "with_over_without": statistics.median(ratios),
                        "ratio_q25": float(np.quantile(ratios, 0.25)),
                        "ratio_q75": float(np.quantile(ratios, 0.75)),
                        "head_layers": head,
                        "max_abs_diff": max_diff,
                    }
                )
                loads.append(os.getloadavg()[0])
                print(f"t_d {budget} {t}T: with / without {rows[-1]['with_over_without']:.3f}", flush=True)
    m = machine_info()
    command = f"python benchmarks/bench_cpu/openvino_layout_hint.py --set {args.name}"
    stem = f"openvino-layout-hint-{args.name}"
    write_json(
        Path(args.out) / f"{stem}.json",
        {
            "machine": m,
            "set": args.name,
            "cycles": args.cycles,
            "burst": args.burst,
            "loadavg": loads,
            "rows": rows,
            "command": command,
        },
    )
    lines = [
        (
            f"OpenVINO {m['packages'].get('openvino')}, set {args.name}, native dynamic IR with and without the "
            f"PrimitivesPriority request on the convolutions feeding an op, one process, alternated: "
            f"{args.cycles} cycles x bursts of {args.burst} calls, f32, batch 1; "
            f"load average {' -> '.join(f'{x:.2f}' for x in loads)}."
        ),
        "",
        f"Re-run: `{command}`",
        "",
        "| t_d | threads | without ms | with ms | with / without (q25-q75) "
        "| stem, reorders, pool: without -> with (ms, counters) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        h = r["head_layers"]
        lines.append(
            f"| {r['budget']} | {r['threads']} | {r['without_ms']:.3f} | {r['with_ms']:.3f} | "
            f"**{r['with_over_without']:.3f}** ({r['ratio_q25']:.3f}-{r['ratio_q75']:.3f}) | "
            f"{_head_text(h['without'])} -> {_head_text(h['with'])} |"
        )
    write_text(Path(args.out) / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _run(request, x):
    request.set_input_tensor(x)
    request.infer()
    return request.get_output_tensor().data


def _head_counters(request, inputs, calls: int = 64) -> list[dict]:
    """Median per-layer times of the layers before the first op (HEAD_TYPES), with the implementation that ran."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for i in range(calls + 8):
        _run(request, inputs[i % len(inputs)])
        if i < 8:
            continue
        for p in request.profiling_info:
            if p.node_type in HEAD_TYPES and p.real_time.total_seconds() > 0:
                acc.setdefault((p.node_name, p.node_type, p.exec_type), []).append(p.real_time.total_seconds() * 1e3)
    return [{"name": k[0], "type": k[1], "exec": k[2], "ms": statistics.median(v)} for k, v in acc.items()]


def _head_text(layers: list[dict]) -> str:
    total = sum(x["ms"] for x in layers)
    names = ", ".join(f"{x['type']} {x['exec']}" for x in layers)
    return f"{total:.3f} ({names})"


if __name__ == "__main__":
    sys.exit(main())
