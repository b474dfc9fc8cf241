"""Training images/s of the three methods on this machine, interleaved and repeated (median).

    GATEKIT_DATA=../shared/datasets .venv/bin/python benchmarks/train_cifar10/throughput.py \
        --repeats 3 --steps 20 --json benchmarks/train_cifar10/throughput.json

Each measurement is one epoch of `--steps` batches of the cpu-small recipe on real CIFAR-10
(first batch included), with the warm-up stretched to 20 epochs so that the learning rate stays in
its early, stable range (the rate does not change the speed); methods are interleaved within each repeat so
that machine noise hits all three alike, and the ratio to `vicreg` is taken within each repeat before the median.
"""

from __future__ import annotations

import statistics
import tempfile

import click

METHODS = ("vicreg", "vicreg-dual", "vicreg-gating")


@click.command()
@click.option("--repeats", default=3, show_default=True)
@click.option("--steps", default=20, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--json", "json_path", type=click.Path())
def main(repeats: int, steps: int, threads: int, json_path: str | None) -> None:
    from gatekit.atomic import write_json
    from gatekit.sysinfo import machine_info
    from gatekit.train.config import build_config
    from gatekit.train.trainer import train

    runs: dict[str, list[float]] = {m: [] for m in METHODS}
    ratios: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(repeats):
        this = {}
        for method in METHODS:
            cfg = build_config(
                "cpu-small",
                {
                    "method": method,
                    "epochs": 1,
                    "limit": steps * 256,
                    "threads": threads,
                    "device": "cpu",
                    "warmup_epochs": 20,
                },
            )
            with tempfile.TemporaryDirectory() as tmp:
                this[method] = train(cfg, tmp, progress=False).summary["images_per_s"]
            runs[method].append(this[method])
            click.echo(f"repeat {r + 1}: {method:14s} {this[method]:7.1f} images/s")
        for method in METHODS:
            ratios[method].append(this[method] / this["vicreg"])
    result = {
        "machine": machine_info(),
        "threads": threads,
        "steps": steps,
        "batch": 256,
        "recipe": "cpu-small",
        "images_per_s": {m: {"median": statistics.median(v), "runs": v} for m, v in runs.items()},
        "ratio_to_vicreg": {m: {"median": statistics.median(v), "runs": v} for m, v in ratios.items()},
    }
    for m in METHODS:
        click.echo(
            f"{m:14s} median {result['images_per_s'][m]['median']:7.1f} images/s, "
            f"{result['ratio_to_vicreg'][m]['median']:.3f}x vicreg"
        )
    if json_path:
        write_json(json_path, result)


if __name__ == "__main__":
    main()
