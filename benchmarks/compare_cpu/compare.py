"""gatekit against what a user would deploy instead, on this CPU: accuracy (measured on each artifact's own
outputs in its runtime) against measured p90 latency, ResNet-18 x0.25, 32 px, CIFAR-10.

    python benchmarks/compare_cpu/compare.py                 # every phase; finished steps are kept
    python benchmarks/compare_cpu/compare.py --phase bench   # re-measure latency only (a quiet machine)

Families (gatekit.pick.families), all from the 20-epoch `cpu-small` recipe:
1. gatekit: the committed vicreg-dual checkpoints at t_d 0.1 / 0.3 / 0.5 (and t_d 0.3 with gate groups of 16):
   static, hybrid and native dynamic graphs in fp32, the t_d 0.3 static graph at --min-usage thresholds,
   and the static and native dynamic graphs in int8 (gatekit's int8 gated-block ops);
2. torch-pruning: the committed dense `vicreg` checkpoint pruned with Torch-Pruning (`gatekit prune`,
   group L2 magnitude, widths rounded up to 16) at six ratios; and the same after a 1-epoch VICReg
   fine-tune on 25,000 training images (`gatekit train --init`; its cost is recorded), in fp32 and int8;
3. dense: the `vicreg` encoder at x0.25 and every thinner width trained from scratch with the same recipe
   (`runs/thin/vicreg-x{w}`; only those that exist);
4. dense int8: those dense encoders quantized to int8 (ORT QDQ and NNCF).
Phases: prune (checkpoints), export (verified artifacts), accuracy (`gatekit accuracy`: k-NN and linear
probe on all 50,000 training / 10,000 test images; fp32 graphs on ONNX Runtime, whose fp32 outputs the
OpenVINO artifact matches to 1e-6 at export; int8 graphs on each runtime, which quantize differently),
bench (a fresh process without torch: interleaved rounds at 1 thread, medians over rounds), compare.

Writes benchmarks/compare_cpu/{bench.jsonl, accuracy.jsonl, compare.json, compare.md, *.png, costs.json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "benchmarks" / "bench_cpu"))
sys.path.insert(0, str(ROOT))

CKPT = ROOT / "benchmarks" / "train_cifar10" / "checkpoints"
GATEKIT = {
    0.1: CKPT / "vicreg-dual-td0.1.safetensors",
    0.3: CKPT / "vicreg-dual.safetensors",
    0.5: CKPT / "vicreg-dual-td0.5.safetensors",
}
GATE_GROUP_16 = CKPT / "vicreg-dual-g16.safetensors"  # t_d 0.3, one gate decision per 16 channels
DENSE = CKPT / "vicreg.safetensors"
# More training runs of the headline encoders, the same recipe with other --seed values:
# SEEDS/{name}-s{seed}.safetensors for name in vicreg-dual, vicreg-dual-g16, vicreg-x0.25, vicreg-x0.1875,
# vicreg-x0.09375. `gatekit compare` averages the runs of one family and label and states their spread.
SEEDS = CKPT / "seeds"
RATIOS = (0.25, 0.4, 0.5, 0.65, 0.75, 0.9)
MIN_USAGE = (
    0.005,
    0.02,
    0.05,
    0.1,
)  # the t_d 0.3 static curve: channels on for fewer of the calibration images are dropped
THIN = ROOT / "runs" / "thin"
RUNS = ROOT / "runs" / "compare"
FINE_TUNE_IMAGES = 25_000 // 256 * 256  # one epoch over the first 25,000 training images
FINE_TUNE = [
    "--recipe",
    "cpu-small",
    "--method",
    "vicreg",
    "--epochs",
    "1",
    "--limit",
    "25000",
    "--warmup-epochs",
    "0.1",
    "--lr",
    "0.1",
]


def gatekit_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gatekit", *args], check=True)


def prune_phase(threads: int) -> dict:
    """Torch-Pruning checkpoints, and their fine-tunes (CPU seconds recorded), from the dense x0.25 encoder and
    from each further training run of it in SEEDS."""
    costs = {}
    for r in RATIOS:
        costs[f"r{r}"] = prune_and_fine_tune(DENSE, RUNS / "tp" / f"r{r}", RUNS / "tp-ft" / f"r{r}", r, threads)
    for dense in sorted(SEEDS.glob("vicreg-x0.25-s*.safetensors")):
        for r in RATIOS:
            prune_and_fine_tune(
                dense, RUNS / f"tp-{dense.stem}" / f"r{r}", RUNS / f"tp-ft-{dense.stem}" / f"r{r}", r, threads
            )
    return costs


def prune_and_fine_tune(dense: Path, out: Path, ft: Path, ratio: float, threads: int) -> dict:
    if not (out / "model.safetensors").is_file():
        gatekit_cli("prune", str(dense), "--ratio", str(ratio), "--out", str(out), "--json", str(out / "prune.json"))
    if not (ft / "model.safetensors").is_file():
        t0 = time.time()
        gatekit_cli(
            "train",
            "--init",
            str(out / "model.safetensors"),
            *FINE_TUNE,
            "--threads",
            str(threads),
            "--quiet",
            "--out",
            str(ft),
            "--json",
            str(ft / "summary.json"),
        )
        (ft / "wall_seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    summary = json.loads((ft / "summary.json").read_text()) if (ft / "summary.json").is_file() else {}
    return {
        "fine_tune": " ".join(FINE_TUNE),
        "images_seen": FINE_TUNE_IMAGES,
        "measured_seconds": summary.get("seconds"),
        "measured_images_per_s": summary.get("images_per_s"),
        "note": "measured while other jobs shared the 2 cores: see training_cost() for the cost at the "
        "recorded uncontended throughput",
    }


def thin_run_times() -> dict:
    """Wall time and throughput of each thinner run as it went (its metrics.jsonl, one line per epoch): the
    median epoch is what the run costs alone; the sum includes whatever else shared the cores then."""
    out = {}
    for run in sorted(THIN.glob("vicreg-x*")):
        try:
            epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            continue
        if not epochs:
            continue
        rates = sorted(e["images_per_s"] for e in epochs)
        out[run.name.split("-x")[-1]] = {
            "epochs": len(epochs),
            "wall_minutes": round(sum(e["seconds"] for e in epochs) / 60, 1),
            "images_per_s_median": round(statistics.median(rates), 1),
            "images_per_s_max": round(rates[-1], 1),
        }
    return out


def training_cost() -> dict:
    """What each family costs to train, in images seen and in CPU hours at the recorded uncontended training
    throughput of this recipe (benchmarks/train_cifar10/throughput.json, 2 threads)."""
    rate = json.loads((ROOT / "benchmarks" / "train_cifar10" / "throughput.json").read_text())["images_per_s"]
    run = 20 * (50_000 // 256) * 256  # 20 epochs of the cpu-small recipe (whole batches)

    def hours(images, method):
        return round(images / rate[method]["median"] / 3600, 2)

    return {
        "gatekit": {
            "runs": "one vicreg-dual run per budget, each giving a dense and a gated encoder",
            "images_per_budget": run,
            "cpu_h_per_budget": hours(run, "vicreg-dual"),
        },
        "torch-pruning": {
            "runs": "one dense vicreg run for every ratio, then a prune (seconds)",
            "images": run,
            "cpu_h": hours(run, "vicreg"),
        },
        "torch-pruning + fine-tune": {
            "runs": "the dense run, plus a fine-tune per ratio",
            "images_per_ratio": FINE_TUNE_IMAGES,
            "cpu_h_per_ratio": hours(FINE_TUNE_IMAGES, "vicreg"),
        },
        "dense": {
            "runs": "one vicreg run per width (x0.25 throughput; thinner runs are somewhat faster)",
            "images_per_width": run,
            "cpu_h_per_width": hours(run, "vicreg"),
            "measured_thin_runs": thin_run_times(),
        },
        "throughput": {k: v["median"] for k, v in rate.items()},
    }


def thin_checkpoints() -> dict[str, Path]:
    return {
        p.name.split("-x")[-1]: p / "model.safetensors"
        for p in sorted(THIN.glob("vicreg-x*"))
        if (p / "model.safetensors").is_file() and _finished(p)
    }


def _finished(run: Path) -> bool:
    """A thinner run counts only when it reached the recipe's epochs (the same schedule as the others)."""
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        meta = f.metadata() or {}
    cfg = json.loads(meta.get("train_config", "{}"))
    return int(meta.get("epoch", 0)) >= int(cfg.get("epochs", 1 << 30))


def export_phase() -> list[dict]:
    """Every artifact, exported and verified; returns the bench items."""
    from gatekit.artifacts import manifest_name

    art = RUNS / "artifacts"
    jobs = []  # (checkpoint, out dir, graphs, formats, precisions, options)
    for b, ckpt in GATEKIT.items():
        jobs.append((ckpt, art / f"gatekit-td{b}", ["static", "hybrid", "dynamic"], ["onnx", "openvino"], ["fp32"], {}))
        jobs.append((ckpt, art / f"gatekit-td{b}-int8", ["static", "dynamic"], ["onnx", "openvino"], ["int8"], {}))
    jobs.append(
        (GATE_GROUP_16, art / "gatekit-td0.3-g16", ["static", "hybrid", "dynamic"], ["onnx", "openvino"], ["fp32"], {})
    )
    jobs.append(
        (GATE_GROUP_16, art / "gatekit-td0.3-g16-int8", ["static", "dynamic"], ["onnx", "openvino"], ["int8"], {})
    )
    for mu in MIN_USAGE:
        jobs.append(
            (GATEKIT[0.3], art / f"gatekit-td0.3-mu{mu}", ["static"], ["onnx", "openvino"], ["fp32"], {"min_usage": mu})
        )
    dense = {"0.25": DENSE, **thin_checkpoints()}
    for w, ckpt in dense.items():
        jobs.append((ckpt, art / f"dense-x{w}", ["dense"], ["onnx", "openvino"], ["fp32", "int8"], {}))
    for r in RATIOS:
        for fam in ("tp", "tp-ft"):
            jobs.append(
                (
                    RUNS / fam / f"r{r}" / "model.safetensors",
                    art / f"{fam}-r{r}",
                    ["dense"],
                    ["onnx", "openvino"],
                    ["fp32"],
                    {},
                )
            )
        jobs.append(
            (
                RUNS / "tp-ft" / f"r{r}" / "model.safetensors",
                art / f"tp-ft-r{r}-int8",
                ["dense"],
                ["onnx", "openvino"],
                ["int8"],
                {},
            )
        )
    jobs += seed_jobs(art)
    items = []
    for ckpt, out, graphs, formats, precisions, opts in jobs:
        if not Path(ckpt).is_file():
            print(f"not yet trained: {ckpt} (run --phase prune)", flush=True)
            continue
        want = len(graphs) * len(formats) * len(precisions)
        if (len(list(out.glob("*.json"))) if out.is_dir() else 0) < want:
            out.mkdir(parents=True, exist_ok=True)
            for fmt in formats:
                for precision in precisions:
                    tail = "" if precision == "fp32" else f"-{precision}"
                    refused = json.loads((out / "refused.json").read_text()) if (out / "refused.json").is_file() else []
                    if all((out / manifest_name(g + tail, fmt)).is_file() for g in graphs) or {
                        "format": fmt,
                        "precision": precision,
                    } in [{k: r[k] for k in ("format", "precision")} for r in refused]:
                        continue
                    export_int8_or_fp32(ckpt, out, graphs, fmt, precision, opts)
        for mpath in sorted(out.glob("*.json")):
            m = json.loads(mpath.read_text())
            if m.get("graph") not in graphs or (m.get("precision") or "fp32") not in precisions:
                continue
            items.append(
                {
                    "kind": "artifact",
                    "manifest": str(mpath),
                    "graph": m["graph"],
                    "budget": m.get("budget"),
                    "format": m["format"],
                    "precision": m.get("precision") or "fp32",
                }
            )
    return items


def seed_jobs(art: Path) -> list[tuple]:
    """The same graphs for every further training run in SEEDS, and Torch-Pruning (with its fine-tune) from each
    further dense x0.25 run."""
    jobs = []
    for ckpt in sorted(SEEDS.glob("*-s*.safetensors")):
        name = ckpt.stem
        if name.startswith("vicreg-dual"):
            jobs.append((ckpt, art / f"{name}", ["static", "hybrid", "dynamic"], ["onnx", "openvino"], ["fp32"], {}))
            jobs.append((ckpt, art / f"{name}-int8", ["static", "dynamic"], ["onnx", "openvino"], ["int8"], {}))
        elif name.startswith("vicreg-x"):
            jobs.append((ckpt, art / f"dense-{name}", ["dense"], ["onnx", "openvino"], ["fp32", "int8"], {}))
            if name.startswith("vicreg-x0.25-"):
                for r in RATIOS:
                    ft = RUNS / f"tp-ft-{name}" / f"r{r}" / "model.safetensors"
                    jobs.append((ft, art / f"tp-ft-{name}-r{r}", ["dense"], ["onnx", "openvino"], ["fp32", "int8"], {}))
    return jobs


def export_int8_or_fp32(ckpt: Path, out: Path, graphs: list[str], fmt: str, precision: str, opts: dict) -> None:
    """One format and precision. int8 as a user would: the default quantization first and, where export
    refuses it (k-NN on 10,000 test images more than 1 point below fp32), the hint it prints: stem and last
    block kept in float. A graph refused both ways is left out (and said so in refused.json)."""
    from gatekit.errors import GatekitError
    from gatekit.export.sweep import export_all

    tries = [dict(opts)] if precision != "int8" else [dict(opts), dict(opts, quant_exclude=("stem", "last"))]
    for i, o in enumerate(tries):
        try:
            export_all(
                ckpt,
                out,
                graphs=graphs,
                formats=[fmt],
                precisions=[precision],
                strict=True,
                knn_check=False,
                progress=False,
                **o,
            )
            return
        except GatekitError as e:
            print(f"refused: {out.name} {fmt} {precision} {o}: {e}", flush=True)
            if i == len(tries) - 1:
                refused = out / "refused.json"
                old = json.loads(refused.read_text()) if refused.is_file() else []
                refused.write_text(
                    json.dumps(old + [{"format": fmt, "precision": precision, "error": str(e)}], indent=1)
                )


def accuracy_phase(items: list[dict], threads: int, out: Path) -> None:
    """`gatekit accuracy` per graph: fp32 once (ONNX Runtime), int8 on each runtime. Kept across runs."""
    from gatekit.artifacts import open_artifact
    from gatekit.bench.accuracy import SCHEMA, measure_accuracy
    from gatekit.bench.run import read_jsonl, write_jsonl

    done = {r["manifest_path"] for r in read_jsonl([out], schema=SCHEMA)} if out.is_file() else set()
    for it in items:
        if it["precision"] == "fp32" and it["format"] != "onnx":
            continue
        if it["manifest"] in done:
            continue
        rec = measure_accuracy(open_artifact(it["manifest"]), threads=threads)
        write_jsonl(out, [rec])
        print(
            f"accuracy {Path(it['manifest']).parent.name}/{Path(it['manifest']).name}: "
            f"k-NN {100 * rec['knn']['top1']:.2f}%"
            f" linear {100 * rec['linear']['top1']:.2f}% ({rec['embed_seconds']} s)",
            flush=True,
        )


def main() -> None:
    from interleaved import add_arguments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--phase", choices=("all", "prune", "export", "accuracy", "bench", "compare"), default="all")
    ap.add_argument("--accuracy-threads", type=int, default=2)
    ap.set_defaults(threads="1", out=str(HERE))
    args = ap.parse_args()
    out = Path(args.out)
    items_path = RUNS / "items.json"
    if args.bench_only:  # phase 2 of bench, in a fresh process: interleaved rounds, no torch
        from interleaved import bench_phase

        from gatekit.bench.run import write_jsonl

        items = json.loads(Path(args.bench_only).read_text())
        result = bench_phase(
            items, [int(t) for t in args.threads.split(",")], args.rounds, args.min_runs, args.min_seconds, args.seed
        )
        if (out / "bench.jsonl").exists():
            (out / "bench.jsonl").unlink()
        write_jsonl(out / "bench.jsonl", result["records"])
        (RUNS / "bench-loads.json").write_text(
            json.dumps({"loads": result["loads"], "rounds": args.rounds, "protocol": result["protocol"]}, indent=1)
        )
        return
    if args.phase in ("all", "prune"):
        costs = {"fine_tunes": prune_phase(args.accuracy_threads), "training": training_cost()}
        (out / "costs.json").write_text(json.dumps(costs, indent=1) + "\n")
    if args.phase in ("all", "export"):
        items = export_phase()
        items_path.parent.mkdir(parents=True, exist_ok=True)
        items_path.write_text(json.dumps(items, indent=1))
    items = json.loads(items_path.read_text()) if items_path.is_file() else []
    if args.phase in ("all", "accuracy"):
        accuracy_phase(items, args.accuracy_threads, out / "accuracy.jsonl")
    if args.phase in ("all", "bench"):
        cmd = [
            sys.executable,
            __file__,
            "--threads",
            args.threads,
            "--rounds",
            str(args.rounds),
            "--min-runs",
            str(args.min_runs),
            "--min-seconds",
            str(args.min_seconds),
            "--seed",
            str(args.seed),
            "--out",
            str(out),
            "--bench-only",
            str(items_path),
        ]
        subprocess.run(cmd, check=True)
    if args.phase in ("all", "bench", "compare"):
        for group, name in ((1, "compare"), (16, "compare-g16")):  # the paper's gates; the change measured beside them
            gatekit_cli(
                "compare",
                "--results",
                str(out / "bench.jsonl"),
                "--accuracy",
                str(out / "accuracy.jsonl"),
                "--gate-group",
                str(group),
                "--name",
                name,
                "--out",
                str(out),
            )


if __name__ == "__main__":
    main()
