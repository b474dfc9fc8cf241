"""`gatekit bench`: artifacts x runtimes x threads under one protocol, recorded as versioned JSON lines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from gatekit.artifacts import Artifact
from gatekit.bench.protocol import Protocol, measure, per_input_latency
from gatekit.bench.tables import normalize_runtime_names
from gatekit.errors import GatekitError

SCHEMA = "gatekit.bench/1"


def manifest_summary(m: dict, ops: str | None = None) -> dict:
    """What a record keeps of an artifact's manifest. `ops` "fallback": a native-op graph ran its standard-ops
    fallback, whose own reduced-precision check (an int8 dynamic graph's Q/DQ form) is the one that applies."""
    from gatekit.artifacts import FALLBACK

    keys = (
        "graph",
        "format",
        "dynamic_form",
        "method",
        "budget",
        "widths",
        "full_widths",
        "macs",
        "precision",
        "checkpoint_sha256",
        "model_config",
        "input",
        "gatekit_version",
        "agreement",
        "native_op",
        "dynamic_skipping",
        "quantization",
        "pruned",
        "pruning",
        "sha256",
    )
    out = {k: m.get(k) for k in keys}
    v = m.get("verification") or {}
    if ops == FALLBACK and isinstance(v.get("fallback"), dict) and "knn_delta_points" in v["fallback"]:
        v = v["fallback"]
    if "knn_delta_points" in v:  # a reduced-precision artifact: how far it is from its fp32 graph
        out["precision_check"] = {k: v[k] for k in ("cosine_to_fp32", "knn20", "knn20_fp32", "knn_delta_points")}
        if "gate_agreement" in v:  # an int8 dynamic graph: how often its gates decide as the fp32 graph's
            out["precision_check"]["gate_agreement"] = v["gate_agreement"]
    out["macs"] = {k: v for k, v in (m.get("macs") or {}).items()}
    return out


def bench_one(
    artifact: Artifact,
    runtime: str,
    threads: int | None,
    batch: int,
    protocol: Protocol,
    inputs: np.ndarray,
    inputs_name: str,
    progress=None,
    describe_machine: dict | None = None,
    ops: str = "auto",
) -> dict:
    """One artifact on one runtime at one thread count. `ops`: for a graph with native custom ops, "auto"
    (the op library where it is built, else the standard-ops fallback), "native" or "fallback"; the record's
    runtime.ops says which ran."""
    from gatekit.jetson import TegrastatsMonitor
    from gatekit.runtimes import load_artifact
    from gatekit.sysinfo import machine_info

    session = load_artifact(
        artifact, runtime, ops=ops, threads=threads, precision=artifact.manifest.get("precision", "fp32")
    )
    try:
        fixed = session.input_shape[0]
        if fixed not in (-1, batch):
            raise GatekitError(f"{artifact.file.name} was exported for batch {fixed}; re-export it for batch {batch}")
        n = (len(inputs) // batch) * batch
        if n == 0:
            raise GatekitError(f"fewer input images ({len(inputs)}) than one batch of {batch}")
        batches = [inputs[i : i + batch] for i in range(0, n, batch)]
        with TegrastatsMonitor() as power:  # board power, GPU load and temperatures on a Jetson; else nothing
            m = measure(session, batches, protocol, progress)
        record = {
            "schema": SCHEMA,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "artifact": str(artifact.path_for(runtime)),  # runtime.ops says whether a native-op graph ran its fallback
            "manifest": manifest_summary(artifact.manifest, session.info.ops),
            "runtime": session.info.to_dict(),
            "threads": threads,
            "batch": batch,
            "precision": session.info.precision,
            "inputs": {"dataset": inputs_name, "images": n},
            "protocol": protocol.to_dict(),
            "stats": m.stats(),
            "machine": describe_machine or machine_info(),
            "power": power.summary,
        }
        if artifact.edited:  # measured with --trust-edited: `report` and `pick` refuse it unless told the same
            record["edited"] = list(artifact.edited)
        per_input = artifact.manifest.get("per_input")
        if per_input and batch == 1:
            lat = per_input_latency(m)
            macs = per_input["macs"]
            record["per_input"] = [
                {"index": i, "macs": macs[i], "p50_ms": lat[i]} for i in sorted(lat) if i < len(macs)
            ]
        return record
    finally:
        session.close()


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    from gatekit.atomic import atomic_path

    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    with atomic_path(path) as tmp:
        tmp.write_text(old + "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(paths, required: dict | None = None, schema: str = SCHEMA, edited_ok: bool = True) -> list[dict]:
    """Records of `schema` (benchmark records by default) from JSON-lines files. `required`: dotted field ->
    type(s) each record must have (`{"manifest.graph": str}`); any failure is one line naming the file, the
    line and the field. `edited_ok=False`: a record measured on an artifact whose files did not match its
    manifest (`bench --trust-edited`) is refused too. Runtime names are read as each runtime's one name
    (older records say "onnxruntime" for "ort")."""
    records = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise GatekitError(f"no results file at {p}")
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            raise GatekitError(f"{p} is not UTF-8 text: not a results file") from None
        except OSError as e:
            raise GatekitError(f"cannot read results {p}: {e.strerror}") from None
        for k, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise GatekitError(f"{p}:{k} is not JSON") from None
            if not isinstance(r, dict):
                raise GatekitError(f"{p}:{k} is a JSON {type(r).__name__}, not a record")
            if r.get("schema") != schema:
                raise GatekitError(f"{p}:{k} has schema {r.get('schema')!r}, expected {schema}")
            for field, types in (required or {}).items():
                if not _has(r, field, types):
                    raise GatekitError(
                        f"{p}:{k} lacks {field} (or it has the wrong type): "
                        f"not a `gatekit {'accuracy' if schema != SCHEMA else 'bench --json'}` record"
                    )
            if not edited_ok and r.get("edited"):
                raise GatekitError(
                    f"{p}:{k} was measured on an artifact that differs from its manifest "
                    f"({str(r['edited'][0])[:200]}): refused; pass --trust-edited to read it"
                )
            records.append(r)
    return normalize_runtime_names(records)


def _has(record: dict, field: str, types) -> bool:
    value = record
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return isinstance(value, types) and not (
        isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
    )
