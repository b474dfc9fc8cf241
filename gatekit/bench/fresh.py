"""Measure one artifact in a fresh Python process.

A process that has just run torch (an export) keeps its threads spinning for a while after their work,
and they share the cores with the measurement, which then reads markedly slower than in a fresh process
(`benchmarks/pick_cpu/`). So a plan-then-measure loop measures through this function,
which runs `bench_one` in a child interpreter (`python -m gatekit.bench.fresh REQUEST.json`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from gatekit.bench.protocol import Protocol
from gatekit.errors import GatekitError


def measure_in_fresh_process(
    manifest: str | Path,
    runtime: str,
    threads: int | None,
    protocol: Protocol,
    n_inputs: int = 256,
    data_dir: str | None = None,
    batch: int = 1,
) -> dict:
    """The bench record of one artifact, measured in its own process."""
    with tempfile.TemporaryDirectory(prefix="gatekit-measure-") as tmp:
        request = Path(tmp) / "request.json"
        out = Path(tmp) / "record.json"
        request.write_text(
            json.dumps(
                {
                    "manifest": str(manifest),
                    "runtime": runtime,
                    "threads": threads,
                    "protocol": protocol.to_dict(),
                    "n_inputs": n_inputs,
                    "data_dir": data_dir,
                    "batch": batch,
                    "out": str(out),
                }
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "gatekit.bench.fresh", str(request)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.splitlines() if x.strip()]
            raise GatekitError(f"measuring {Path(manifest).name} failed: {lines[-1] if lines else proc.returncode}")
        return json.loads(out.read_text())


def _main(request_path: str) -> int:
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.atomic import write_json
    from gatekit.bench.run import bench_one

    req = json.loads(Path(request_path).read_text())
    art = open_artifact(req["manifest"])
    inputs, name = load_inputs(art.manifest, req["n_inputs"], req["data_dir"])
    try:
        record = bench_one(art, req["runtime"], req["threads"], req["batch"], Protocol(**req["protocol"]), inputs, name)
    except GatekitError as e:
        print(f"gatekit: error: {e}", file=sys.stderr)
        return 2
    write_json(req["out"], record)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
