"""Accuracy against measured latency, every family side by side (`gatekit compare`).

Inputs: `gatekit bench` records (several records of one artifact, runtime, threads and batch, e.g.
interleaved rounds, give the median of their percentile) and `gatekit accuracy` records (accuracy on
the artifact's own outputs in its runtime). A record's accuracy applies to the bench records of the
same artifact (same directory and stem: an .onnx and the .xml exported beside it are one graph); a
reduced-precision accuracy (int8) applies only to the format it was measured on, because each
runtime quantizes on its own.

Per (runtime, threads, batch): the points of each family (gatekit.pick.families), each family's Pareto
front (no other point of the family is both faster and more accurate), and a headline per precision
(fp32, int8): at the latency of the reference artifact (the fastest gatekit t_d 0.3 artifact in that
precision, per-channel gates, no --min-usage), the accuracy each other family reaches on its front,
linearly interpolated between its two neighbouring front points, and what gatekit's own front reaches
there (every checkpoint and variant: other budgets, int8, --min-usage, gate groups).
A family whose fastest point is slower than that latency has no configuration that fast (None); at
latencies beyond its slowest point it keeps its most accurate point.

Seeds: artifacts of one family and label exported from different checkpoints (training runs of the same
recipe with other seeds) are one point, at the mean of their latencies and accuracies, with the sample
standard deviation and the range of the accuracies. Fronts and interpolation use the means; a headline
difference carries the spread of both sides (the root of the sum of their variances, the family's taken
at the reference latency like its accuracy) and is called "within spread" when it is no larger. A point
of one run has no spread: its difference is "one run", undecided.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from gatekit.artifacts import runtime_name
from gatekit.bench.tables import checkpoint_names, network_key, network_label
from gatekit.errors import GatekitError
from gatekit.pick.families import FAMILIES, GATEKIT, family_of, label_of

METRICS = ("knn", "linear")
REFERENCE_BUDGET = 0.3
REFERENCE_PRECISIONS = ("fp32", "int8")  # one headline per precision of the reference artifact


@dataclass
class Point:
    family: str
    label: str
    latency_ms: float
    accuracy: float | None
    flops_ratio: float
    precision: str
    artifact: str
    summary: dict
    network: str = ""  # the network measured: architecture, width, input size, gate group, checkpoint(s)
    seeds: int = 1  # training runs (distinct checkpoints) averaged into this point
    accuracy_sd: float | None = None  # sample standard deviation over the runs with an accuracy (>= 2 of them)
    accuracy_range: tuple[float, float] | None = None
    artifacts: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The label within the family and the network: two networks with one label are two names."""
        return f"{self.label} [{self.network}]" if self.network else self.label

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "label": self.label,
            "network": self.network,
            "name": self.name,
            "latency_ms": self.latency_ms,
            "accuracy": self.accuracy,
            "accuracy_sd": self.accuracy_sd,
            "accuracy_range": list(self.accuracy_range) if self.accuracy_range else None,
            "seeds": self.seeds,
            "flops_ratio": self.flops_ratio,
            "precision": self.precision,
            "artifact": self.artifact,
            "artifacts": list(self.artifacts or (self.artifact,)),
            "budget": self.summary.get("budget"),
            "graph": self.summary.get("graph"),
            "widths": self.summary.get("widths"),
        }


def graph_key(artifact: str) -> tuple[str, str]:
    """An artifact's graph: its directory and stem without the format's suffix (and a native graph's
    fallback infix), so the formats exported from one graph share it."""
    p = Path(artifact)
    name = p.name
    for suffix in (".onnx", ".xml", ".engine"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.endswith(".fallback"):
        name = name[: -len(".fallback")]
    return str(p.parent), name


def accuracy_index(records: list[dict], metric: str) -> dict:
    """(graph key, precision, format or None) -> accuracy, from `gatekit accuracy` records."""
    if metric not in METRICS:
        raise GatekitError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    out = {}
    for i, r in enumerate(records):
        try:
            m = r["manifest"]
            value = r["knn"]["top1"] if metric == "knn" else r.get("linear", {}).get("top1")
            key = graph_key(r["artifact"])
            precision = m.get("precision") or "fp32"
            fmt = m.get("format")
        except (KeyError, TypeError):
            raise GatekitError(
                f"accuracy record {i + 1} is not a `gatekit accuracy` record (needs artifact, manifest, knn)"
            ) from None
        if value is None:
            continue
        out[(key, precision, fmt)] = value
        if precision in ("fp32", "fp16", "bf16"):  # one graph in float: the same accuracy in every format
            out.setdefault((key, precision, None), value)
    return out


def accuracy_for(record: dict, index: dict) -> float | None:
    m = record["manifest"]
    key, precision = graph_key(record["artifact"]), m.get("precision") or record.get("precision") or "fp32"
    if (key, precision, m.get("format")) in index:
        return index[(key, precision, m.get("format"))]
    return index.get((key, precision, None))


def collect(
    bench_records: list[dict], accuracy_records: list[dict], *, metric: str = "knn", percentile: int = 90
) -> dict[tuple, list[Point]]:
    """(runtime, threads, batch) -> the points measured there (median over repeated records)."""
    index = accuracy_index(accuracy_records, metric)
    stat = f"p{percentile}_ms"
    grouped: dict[tuple, list[dict]] = {}
    for i, r in enumerate(bench_records):
        try:
            k = (runtime_name(r["runtime"]["name"]), r["threads"], r["batch"], r["artifact"], r["runtime"].get("ops"))
            r["stats"][stat], r["manifest"]["macs"]["ratio_to_dense"]
        except (KeyError, TypeError):
            raise GatekitError(f"bench record {i + 1} is not a `gatekit bench` record with {stat}") from None
        grouped.setdefault(k, []).append(r)
    names = checkpoint_names(bench_records)
    out: dict[tuple, list[Point]] = {}
    for (rt, threads, batch, artifact, ops), recs in grouped.items():
        m = recs[0]["manifest"]
        if ops == "fallback":  # a native-op graph's standard-ops fallback: not what a user ships where the op is built
            continue
        latency = statistics.median(x["stats"][stat] for x in recs)
        point = Point(
            family_of(m),
            label_of(m),
            latency,
            accuracy_for(recs[0], index),
            m["macs"]["ratio_to_dense"],
            m.get("precision") or "fp32",
            artifact,
            m,
            network_label(recs[0], names),
        )
        out.setdefault((rt, threads, batch), []).append(point)
    return {k: merge_seeds(points) for k, points in out.items()}


def merge_seeds(points: list[Point]) -> list[Point]:
    """One point per family, label, precision, method and network (all but its checkpoint): the mean over the
    training runs behind it.

    Runs are told apart by their checkpoint's sha256; artifacts of one checkpoint under one label (the same
    graph exported twice) are one run, their latencies and accuracies averaged first."""
    groups: dict[tuple, dict[str, list[Point]]] = {}
    for p in points:
        run = p.summary.get("checkpoint_sha256") or p.artifact
        key = (p.family, p.label, p.precision, p.summary.get("method"), network_key({"manifest": p.summary})[:5])
        groups.setdefault(key, {}).setdefault(run, []).append(p)
    return [_mean_point([_mean_point(ps) for ps in runs.values()], across_runs=True) for runs in groups.values()]


def _mean_point(points: list[Point], across_runs: bool = False) -> Point:
    """One point at the mean of `points`' latencies, accuracies and FLOPs: exports of one run, or (across_runs)
    training runs, which also give the point its run count, the accuracies' spread and a network of runs."""
    if len(points) == 1:
        return points[0]
    accs = [p.accuracy for p in points if p.accuracy is not None]
    spread = across_runs and len(accs) >= 2
    first = points[0]
    return Point(
        first.family,
        first.label,
        statistics.fmean(p.latency_ms for p in points),
        statistics.fmean(accs) if accs else None,
        statistics.fmean(p.flops_ratio for p in points),
        first.precision,
        first.artifact,
        first.summary,
        _network_of_runs(first.network, len(points)) if across_runs else first.network,
        seeds=len(points) if across_runs else 1,
        accuracy_sd=statistics.stdev(accs) if spread else None,
        accuracy_range=(min(accs), max(accs)) if spread else None,
        artifacts=tuple(a for p in points for a in (p.artifacts or (p.artifact,))),
    )


def _network_of_runs(network: str, runs: int) -> str:
    """A network label whose last word (one checkpoint's short name) stands for several runs."""
    return f"{network.rsplit(' ', 1)[0]} ({runs} runs)" if network else f"{runs} runs"


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both latency and accuracy, fastest first (accuracy known only)."""
    known = sorted((p for p in points if p.accuracy is not None), key=lambda p: (p.latency_ms, -p.accuracy))
    front, best = [], float("-inf")
    for p in known:
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


def interpolate(front: list[Point], latency_ms: float, value=lambda p: p.accuracy) -> float | None:
    """The accuracy a front reaches at a latency: linear between neighbouring front points; None below its
    fastest point; its most accurate point beyond its slowest.  `value` reads another quantity of the same
    points (their accuracy's standard deviation) at the same place; None where a point it needs has none."""
    if not front or latency_ms < front[0].latency_ms:
        return None
    for a, b in zip(front, front[1:]):
        if a.latency_ms <= latency_ms <= b.latency_ms:
            va, vb = value(a), value(b)
            if va is None or vb is None:
                return None
            if b.latency_ms == a.latency_ms:
                return va if a.accuracy >= b.accuracy else vb
            t = (latency_ms - a.latency_ms) / (b.latency_ms - a.latency_ms)
            return va + t * (vb - va)
    return value(front[-1])


def difference(ref: Point, family_accuracy: float, family_sd: float | None) -> dict:
    """gatekit minus a family in points, the spread of that difference and whether it exceeds it."""
    points = 100 * (ref.accuracy - family_accuracy)
    if ref.accuracy_sd is None or family_sd is None:
        return {"gatekit_minus_family_points": points, "spread_points": None, "verdict": "one run"}
    spread = 100 * (ref.accuracy_sd**2 + family_sd**2) ** 0.5
    verdict = "within spread" if abs(points) <= spread else ("ahead" if points > 0 else "behind")
    return {"gatekit_minus_family_points": points, "spread_points": spread, "verdict": verdict}


def reference_point(
    points: list[Point], budget: float = REFERENCE_BUDGET, precision: str = "fp32", gate_group: int = 1
) -> Point | None:
    """The fastest gatekit artifact of the budget and gate group (1: the paper's per-channel gates), in
    `precision`, at the channels its calibration uses (no --min-usage), with a known accuracy."""
    cands = [
        p
        for p in points
        if p.family == GATEKIT
        and p.summary.get("budget") == budget
        and p.precision == precision
        and p.accuracy is not None
        and p.summary.get("graph") != "dense"
        and not (p.summary.get("pruning") or {}).get("min_usage")
        and ((p.summary.get("model_config") or {}).get("gate_group") or 1) == gate_group
    ]
    return min(cands, key=lambda p: p.latency_ms) if cands else None


def compare(
    bench_records: list[dict],
    accuracy_records: list[dict],
    *,
    metric: str = "knn",
    percentile: int = 90,
    budget: float = REFERENCE_BUDGET,
    gate_group: int = 1,
) -> dict:
    groups = collect(bench_records, accuracy_records, metric=metric, percentile=percentile)
    if not groups:
        raise GatekitError("no bench records to compare")
    out = []
    for (rt, threads, batch), points in sorted(groups.items()):
        families = {f: sorted((p for p in points if p.family == f), key=lambda p: p.latency_ms) for f in FAMILIES}
        fronts = {f: pareto_front(ps) for f, ps in families.items() if ps}
        headlines = {}
        for precision in REFERENCE_PRECISIONS:
            ref = reference_point(points, budget, precision, gate_group)
            if ref is None:
                continue
            others = {}
            for f, front in fronts.items():
                if f == GATEKIT:
                    continue
                acc = interpolate(front, ref.latency_ms)
                sd = interpolate(front, ref.latency_ms, lambda p: p.accuracy_sd)
                diff = (
                    {"gatekit_minus_family_points": None, "spread_points": None, "verdict": None}
                    if acc is None
                    else difference(ref, acc, sd)
                )
                others[f] = {
                    "accuracy": acc,
                    "accuracy_sd": sd,
                    **diff,
                    "seeds": min((p.seeds for p in front), default=0),
                    "fastest_ms": front[0].latency_ms if front else None,
                }
            best = interpolate(fronts[GATEKIT], ref.latency_ms)  # any gatekit variant (int8, --min-usage, groups)
            headlines[precision] = {"reference": ref.to_dict(), "families": others, "gatekit_front_accuracy": best}
        on_front = {id(p) for front in fronts.values() for p in front}
        out.append(
            {
                "runtime": rt,
                "threads": threads,
                "batch": batch,
                "points": [
                    dict(p.to_dict(), on_front=id(p) in on_front) for f in FAMILIES for p in families.get(f, [])
                ],
                "fronts": {f: [p.name for p in front] for f, front in fronts.items()},
                "missing_accuracy": [p.name for p in points if p.accuracy is None],
                "headlines": headlines,
            }
        )
    return {
        "metric": metric,
        "percentile": percentile,
        "reference_budget": budget,
        "reference_gate_group": gate_group,
        "groups": out,
    }


def markdown(result: dict) -> str:
    pct, metric = result["percentile"], {"knn": "k-NN top-1", "linear": "linear probe"}[result["metric"]]
    lines = []
    for g in result["groups"]:
        lines.append(f"### {g['runtime']}, {g['threads']} thread(s), batch {g['batch']}\n")
        for h in g["headlines"].values():
            ref = h["reference"]
            lines.append(
                f"Reference: gatekit {ref['name']} at p{pct} {ref['latency_ms']:.3f} ms, {metric} "
                f"{_accuracy_text(ref['accuracy'], ref['accuracy_sd'])} ({_runs(ref['seeds'])}); gatekit's "
                f"own front (every checkpoint and variant) reaches {100 * h['gatekit_front_accuracy']:.2f}% "
                f"there.\n"
            )
            lines.append(
                f"| family | {metric} at that p{pct} (front, interpolated) | gatekit minus family (points) | verdict |"
            )
            lines.append("|---|---:|---:|---|")
            for f, v in h["families"].items():
                if v["accuracy"] is None:
                    lines.append(f"| {f} | none that fast (fastest {v['fastest_ms']:.3f} ms) | - | - |")
                    continue
                spread = "" if v["spread_points"] is None else f" ± {v['spread_points']:.2f}"
                lines.append(
                    f"| {f} | {_accuracy_text(v['accuracy'], v['accuracy_sd'])} | "
                    f"{v['gatekit_minus_family_points']:+.2f}{spread} | {v['verdict']} |"
                )
            lines.append("")
        lines.append(
            f"| family | network | artifact | runs | p{pct} ms | FLOPs ratio | {metric} % (mean ± sd, range) "
            f"| on front |"
        )
        lines.append("|---|---|---|---:|---:|---:|---:|---|")
        for p in g["points"]:
            acc = _accuracy_text(p["accuracy"], p["accuracy_sd"], p["accuracy_range"])
            on = "yes" if p["on_front"] else ""
            lines.append(
                f"| {p['family']} | {p['network']} | {p['label']} | {p['seeds']} | {p['latency_ms']:.3f} | "
                f"{p['flops_ratio']:.3f} | {acc} | {on} |"
            )
        lines.append("")
    return "\n".join(lines)


def _accuracy_text(mean: float | None, sd: float | None, span=None) -> str:
    if mean is None:
        return "-"
    text = f"{100 * mean:.2f}" + ("" if sd is None else f" ± {100 * sd:.2f}")
    return text + ("" if not span else f" ({100 * span[0]:.2f}-{100 * span[1]:.2f})")


def _runs(n: int) -> str:
    return "one run" if n == 1 else f"mean of {n} runs"


def plot(group: dict, result: dict, path: str | Path, title: str | None = None) -> None:
    """Accuracy against latency: every family's points (bars: the range over training runs) and its front,
    the reference marked; the legend outside the axes."""
    from gatekit.plotting import legend_outside, new_figure, save_png

    fig = new_figure(figsize=(9.6, 4.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    markers = dict(zip(FAMILIES, ("o", "s", "D", "^", "v")))
    for f in FAMILIES:
        pts = [p for p in group["points"] if p["family"] == f and p["accuracy"] is not None]
        if not pts:
            continue
        sc = ax.scatter(
            [p["latency_ms"] for p in pts],
            [100 * p["accuracy"] for p in pts],
            marker=markers[f],
            s=26,
            alpha=0.75,
            label=f,
        )
        front = [p for p in pts if p["on_front"]]
        front.sort(key=lambda p: p["latency_ms"])
        color = sc.get_facecolor()[0]
        ax.plot([p["latency_ms"] for p in front], [100 * p["accuracy"] for p in front], color=color, lw=1.2)
        spread = [p for p in pts if p.get("accuracy_range")]  # the range over training runs
        if spread:
            ax.errorbar(
                [p["latency_ms"] for p in spread],
                [100 * p["accuracy"] for p in spread],
                yerr=[
                    [100 * (p["accuracy"] - p["accuracy_range"][0]) for p in spread],
                    [100 * (p["accuracy_range"][1] - p["accuracy"]) for p in spread],
                ],
                fmt="none",
                ecolor=color,
                elinewidth=0.8,
                capsize=2,
                alpha=0.75,
            )
    for h, color in zip(group.get("headlines", {}).values(), ("red", "purple")):
        ref = h["reference"]
        ax.scatter(
            [ref["latency_ms"]],
            [100 * ref["accuracy"]],
            s=140,
            facecolors="none",
            edgecolors=color,
            linewidths=2,
            label=f"gatekit {ref['name']}",
        )
        ax.axvline(ref["latency_ms"], color=color, ls=":", lw=1)
    ax.set_xlabel(f"p{result['percentile']} latency (ms), batch {group['batch']}")
    ax.set_ylabel({"knn": "k-NN top-1 (%)", "linear": "linear probe top-1 (%)"}[result["metric"]])
    ax.set_title(title or f"{group['runtime']}, {group['threads']} thread(s)")
    ax.grid(alpha=0.3)
    legend_outside(fig)
    save_png(fig, path)
