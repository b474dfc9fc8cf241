"""`gatekit pick` on recorded results: the most accurate artifact whose measured p-th percentile latency
meets the target on the device the results were recorded on.

Accuracy comes from `gatekit eval --json` files, joined by checkpoint sha256: the dense graph takes the
dense path's accuracy; hybrid and dynamic, which equal the gated path, take the gated path's; static
takes the gated path's k-NN accuracy plus the difference that its export measured between itself and
the gated path on the same k-NN memory (k-NN only; the export's memory may be smaller than eval's). A
reduced-precision artifact (fp16, bf16, int8) takes its fp32 graph's accuracy plus the k-NN difference its
export measured against fp32, so pick chooses across precisions. A candidate without an accuracy is
listed but never chosen. Ties in accuracy go to the lower latency, then to fewer FLOPs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gatekit.artifacts import manifest_path_of, read_manifest, runtime_name
from gatekit.bench.accuracy import SCHEMA as ACCURACY_SCHEMA
from gatekit.bench.tables import MARKERS, checkpoint_names, graph_label, network_label
from gatekit.errors import GatekitError
from gatekit.pick.families import GATEKIT, family_of, label_of

METRICS = {"knn": "knn20_cosine", "linear": "linear"}
ARTIFACTS = "artifacts"  # load_accuracies: the key of the per-artifact records


@dataclass
class Candidate:
    name: str
    latency_ms: float
    flops_ratio: float
    accuracy: float | None
    record: dict

    network: str = ""  # the network measured: architecture, width, input size, gate group, checkpoint

    def to_dict(self) -> dict:
        m = self.record["manifest"]
        return {
            "name": self.name,
            "latency_ms": self.latency_ms,
            "flops_ratio": self.flops_ratio,
            "accuracy": self.accuracy,
            "network": self.network,
            "graph": m["graph"],
            "budget": m.get("budget"),
            "format": m.get("format"),
            "runtime": runtime_name(self.record["runtime"]["name"]),
            "threads": self.record["threads"],
            "batch": self.record["batch"],
            "artifact": self.record.get("artifact"),
            "checkpoint_sha256": m.get("checkpoint_sha256"),
        }


# what `candidates` reads of a benchmark record (checked by read_jsonl, one line naming file, line and field)
RECORD_FIELDS = {
    "runtime.name": str,
    "threads": int,
    "batch": int,
    "precision": str,
    "stats": dict,
    "manifest.graph": str,
    "manifest.macs.ratio_to_dense": (int, float),
}
# what an accuracy record must have (`gatekit accuracy`)
ACCURACY_FIELDS = {"artifact": str, "manifest": dict, "knn.top1": (int, float)}


def load_accuracies(paths) -> dict[str, dict]:
    """checkpoint sha256 -> {path: {metric: value}} from `gatekit eval --json` outputs; the records of
    `gatekit accuracy` files (accuracy measured on the artifacts themselves) under the key ARTIFACTS."""
    out: dict = {}
    for p in paths:
        try:
            text = Path(p).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise GatekitError(f"cannot read accuracy results {p}: {e}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if data is None or (isinstance(data, dict) and data.get("schema") == ACCURACY_SCHEMA):
            from gatekit.bench.run import read_jsonl

            out.setdefault(ARTIFACTS, []).extend(read_jsonl([p], ACCURACY_FIELDS, ACCURACY_SCHEMA))
            continue
        if not isinstance(data, dict) or "checkpoint_sha256" not in data or "paths" not in data:
            raise GatekitError(f"{p} is not a `gatekit eval --json` output")
        if not isinstance(data["paths"], dict) or not all(isinstance(v, dict) for v in data["paths"].values()):
            raise GatekitError(f"{p}: 'paths' must map dense/gated to their metrics")
        if not isinstance(data["checkpoint_sha256"], str):
            raise GatekitError(f"{p}: 'checkpoint_sha256' must be a string")
        out.setdefault(data["checkpoint_sha256"], {}).update(data["paths"])
    return out


def accuracy_of(record: dict, accuracies: dict[str, dict], metric: str, measured: dict | None = None) -> float | None:
    """The artifact's accuracy: measured on the artifact itself where a `gatekit accuracy` record exists;
    else its graph's fp32 accuracy, moved by the k-NN difference its export measured below fp32 (reduced
    precision; k-NN only, the linear probe is not re-measured)."""
    if accuracies.get(ARTIFACTS):
        from gatekit.pick.compare import accuracy_for, accuracy_index

        value = accuracy_for(
            record, measured if measured is not None else accuracy_index(accuracies[ARTIFACTS], metric)
        )
        if value is not None:
            return value
    m = record["manifest"]
    precision = record.get("precision") or m.get("precision") or "fp32"
    if precision == "fp32":
        return _fp32_accuracy(record, accuracies, metric)
    check = m.get("precision_check") or (_manifest_beside(record.get("artifact")).get("verification") or {})
    base = _fp32_accuracy(record, accuracies, metric)
    if metric != "knn" or base is None or "knn_delta_points" not in check:
        return None
    return base + check["knn_delta_points"] / 100


def _fp32_accuracy(record: dict, accuracies: dict[str, dict], metric: str) -> float | None:
    m = record["manifest"]
    if m["graph"] == "static":
        agreement = m.get("agreement") or _manifest_beside(record.get("artifact")).get("agreement") or {}
        if metric != "knn" or "knn20_static" not in agreement:
            return None
        gated = accuracies.get(m.get("checkpoint_sha256"), {}).get("gated", {}).get(METRICS[metric])
        if gated is None:
            return agreement["knn20_static"]
        return gated + agreement["knn20_static"] - agreement["knn20_gated"]
    path = "dense" if m["graph"] == "dense" else "gated"
    return accuracies.get(m.get("checkpoint_sha256"), {}).get(path, {}).get(METRICS[metric])


def _manifest_beside(artifact: str | None) -> dict:
    """The export manifest next to an artifact, for records made before bench copied the agreement."""
    if not artifact:
        return {}
    try:
        return read_manifest(manifest_path_of(artifact))
    except GatekitError:
        return {}


def candidates(
    records: list[dict],
    accuracies: dict[str, dict],
    *,
    metric: str = "knn",
    percentile: int = 90,
    runtime: str | None = None,
    threads: int | None = None,
    batch: int | None = None,
) -> list[Candidate]:
    if metric not in METRICS:
        raise GatekitError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    key = f"p{percentile}_ms"
    measured = None  # the artifact-measured accuracies, indexed once for every record
    if accuracies.get(ARTIFACTS):
        from gatekit.pick.compare import accuracy_index

        measured = accuracy_index(accuracies[ARTIFACTS], metric)
    names = checkpoint_names(records)
    out = []
    for r in records:
        rt = runtime_name(r["runtime"]["name"])
        if runtime and rt != runtime_name(runtime):
            continue
        if threads is not None and r["threads"] != threads:
            continue
        if batch is not None and r["batch"] != batch:
            continue
        if key not in r["stats"]:
            raise GatekitError(f"the results have no {key}: use --percentile 50, 90 or 99")
        if not isinstance(r["stats"][key], (int, float)) or isinstance(r["stats"][key], bool):
            raise GatekitError(f"a result's stats.{key} is not a number: {r['stats'][key]!r}")
        m = r["manifest"]
        family = family_of(m)
        what = f"t_d={m.get('budget')} {graph_label(r)}" if family == GATEKIT else f"{family} {label_of(m)}"
        network = network_label(r, names)  # two networks at one t_d (x0.25 and full width) are two options
        precision = "" if r["precision"] == "fp32" else " " + r["precision"]
        name = f"{what} [{network}] {rt} {r['threads']}T b{r['batch']}{precision}"
        out.append(
            Candidate(
                name,
                r["stats"][key],
                m["macs"]["ratio_to_dense"],
                accuracy_of(r, accuracies, metric, measured),
                r,
                network,
            )
        )
    if not out:
        raise GatekitError("no recorded result matches the runtime, threads and batch asked for")
    return out


def fallback_note(cands: list[Candidate]) -> str | None:
    """One line when some candidates are native-op graphs measured on their standard-ops fallback (the op
    library was missing where they ran), else None."""
    names = [c.name for c in cands if (c.record.get("runtime") or {}).get("ops") == "fallback"]
    if not names:
        return None
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return (
        f"gatekit: {names[0]}{more} ran on the standard-ops fallback, not the native op (missing where it was "
        f"measured): build it there with `gatekit ops build` and bench again"
    )


def pick(cands: list[Candidate], target_ms: float) -> tuple[Candidate | None, str]:
    """The chosen candidate (or None) and a one-line reason."""
    feasible = [c for c in cands if c.latency_ms <= target_ms]
    if not feasible:
        fastest = min(cands, key=lambda c: c.latency_ms)
        return None, (
            f"nothing meets {target_ms:g} ms: the fastest option is {fastest.name} at {fastest.latency_ms:.3f} ms, "
            f"{fastest.latency_ms - target_ms:.3f} ms over"
        )
    known = [c for c in feasible if c.accuracy is not None]
    if not known:
        return (
            None,
            f"{len(feasible)} options meet {target_ms:g} ms but none has a recorded accuracy "
            "(pass --accuracy EVAL.json)",
        )
    best = min(known, key=lambda c: (-c.accuracy, c.latency_ms, c.flops_ratio, c.name))
    return (
        best,
        f"{best.name}: accuracy {100 * best.accuracy:.2f}% at {best.latency_ms:.3f} ms (target {target_ms:g} ms)",
    )


def table(cands: list[Candidate], chosen: Candidate | None, target_ms: float, percentile: int, around: int = 6) -> str:
    """The candidates nearest the target on either side, fastest first."""
    ordered = sorted(cands, key=lambda c: c.latency_ms)
    split = sum(c.latency_ms <= target_ms for c in ordered)
    shown = ordered[max(0, split - around) : split + around]
    lines = [
        f"| | option | p{percentile} ms | FLOPs ratio | accuracy % | meets {target_ms:g} ms |",
        "|---|---|---:|---:|---:|---|",
    ]
    for c in shown:
        mark = "**chosen**" if c is chosen else ""
        acc = "missing" if c.accuracy is None else f"{100 * c.accuracy:.2f}"
        lines.append(
            f"| {mark} | {c.name} | {c.latency_ms:.3f} | {c.flops_ratio:.3f} | {acc} | "
            f"{'yes' if c.latency_ms <= target_ms else 'no'} |"
        )
    return "\n".join(lines)


def plot(cands: list[Candidate], chosen: Candidate | None, target_ms: float, percentile: int, path: str | Path) -> None:
    """Accuracy against latency for every candidate with an accuracy (a marker style per network), the target
    line and the chosen point; the legend right of the axes."""
    from gatekit.plotting import legend_outside, new_figure, save_png

    fig = new_figure(figsize=(9.0, 4.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    known = [c for c in cands if c.accuracy is not None]
    networks = list(dict.fromkeys(c.network for c in known))
    for k, net in enumerate(networks):  # one marker style per network
        here = [c for c in known if c.network == net]
        ax.scatter(
            [c.latency_ms for c in here],
            [100 * c.accuracy for c in here],
            s=22,
            alpha=0.7,
            marker=MARKERS[k % len(MARKERS)],
            label=net or "options",
        )
    if chosen is not None:
        ax.scatter(
            [chosen.latency_ms],
            [100 * chosen.accuracy],
            s=120,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label=f"chosen: {chosen.name}",
        )
    ax.axvline(target_ms, color="red", ls="--", lw=1, label=f"target {target_ms:g} ms")
    ax.set_xlabel(f"p{percentile} latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    legend_outside(fig)
    save_png(fig, path)
