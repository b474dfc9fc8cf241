"""Tables and plots from benchmark records: latency against FLOPs, as ratios to dense on the same runtime."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from gatekit.artifacts import runtime_display, runtime_name


# what the report reads of a benchmark record (checked by read_jsonl: one line naming file, line and field)
REPORT_FIELDS = {"runtime.name": str, "runtime.provider": (str, type(None)), "precision": str, "threads": (int, type(None)),
                 "batch": int, "stats.p50_ms": (int, float), "stats.p90_ms": (int, float), "manifest.graph": str,
                 "manifest.macs.ratio_to_dense": (int, float), "manifest.model_config.arch": str,
                 "manifest.model_config.width": (int, float), "manifest.model_config.stem": str,
                 "manifest.model_config.input_size": int, "manifest.model_config.gate_group": int}


def _arch_key(r: dict) -> tuple:
    c = r["manifest"]["model_config"]
    return (c["arch"], c["width"], c["stem"], c["input_size"])


def _runtime_key(r: dict) -> tuple:
    return (runtime_name(r["runtime"]["name"]), r["runtime"]["provider"], r["precision"], r["threads"], r["batch"])


def runtime_label(r: dict) -> str:
    name = runtime_display(r["runtime"]["name"])
    prec = "" if r["precision"] == "fp32" else f" {r['precision']}"
    return f"{name}{prec} {r['threads'] or 'default'}T b{r['batch']}"


def graph_label(r: dict) -> str:
    """The graph and, for a dynamic graph in another form than NonZero + Gather + Conv, its form; a native-op
    graph that ran its standard-ops fallback says so."""
    m = r["manifest"]
    form = m.get("dynamic_form")
    if form == "native" and (r.get("runtime") or {}).get("ops") == "fallback":
        form = f"native: fallback {(m.get('native_op') or {}).get('fallback_form', '')}".rstrip()
    return f"{m['graph']}{f' ({form})' if form and form != 'conv' else ''}"


def with_ratios(records: list[dict]) -> list[dict]:
    """Adds `latency_ratio` (p50 and p90 over the dense graph's on the same runtime, threads, batch and
    architecture; the same checkpoint's dense graph when there is one) and `flops_ratio`."""
    dense: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["manifest"]["graph"] == "dense":
            dense[_runtime_key(r) + _arch_key(r)].append(r)
    out = []
    for r in records:
        candidates = dense.get(_runtime_key(r) + _arch_key(r), [])
        same_ckpt = [d for d in candidates if d["manifest"]["checkpoint_sha256"] == r["manifest"]["checkpoint_sha256"]]
        ref = (same_ckpt or candidates or [None])[-1]
        r = dict(r)
        r["flops_ratio"] = r["manifest"]["macs"]["ratio_to_dense"]
        if ref is not None:
            r["latency_ratio"] = {q: r["stats"][f"{q}_ms"] / ref["stats"][f"{q}_ms"] for q in ("p50", "p90")}
        out.append(r)
    return out


def markdown_table(records: list[dict]) -> str:
    """Rows: graph x budget; columns: FLOPs ratio, then p50 / p90 ms and the p50 latency ratio per runtime."""
    recs = with_ratios(records)
    columns = sorted({runtime_label(r) for r in recs})
    rows: dict[tuple, dict] = {}
    for r in recs:
        m = r["manifest"]
        key = (m.get("budget") or 0, m["model_config"]["gate_group"], m["model_config"]["input_size"], graph_label(r))
        row = rows.setdefault(key, {"flops": r["flops_ratio"]})
        ratio = r.get("latency_ratio", {}).get("p50")
        row[runtime_label(r)] = f"{r['stats']['p50_ms']:.3f} / {r['stats']['p90_ms']:.3f}" + (f" ({ratio:.2f})" if ratio is not None else "")
    head = "| t_d | input | graph | FLOPs ratio | " + " | ".join(f"{c}: p50 / p90 ms (ratio)" for c in columns) + " |"
    lines = [head, "|" + "---:|" * 4 + "---:|" * len(columns)]
    for (budget, group, size, graph), row in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][3])):
        g = f"{graph}" + (f" g{group}" if group > 1 else "")
        lines.append(f"| {budget} | {size} | {g} | {row['flops']:.3f} | " + " | ".join(row.get(c, "-") for c in columns) + " |")
    return "\n".join(lines)


def plot_latency_vs_flops(records: list[dict], path: str | Path, title: str | None = None) -> None:
    """Latency ratio (p50) against FLOPs ratio, one panel per runtime, the proportional line drawn."""
    from gatekit.plotting import new_figure, save_png

    recs = [r for r in with_ratios(records) if "latency_ratio" in r]
    labels = sorted({runtime_label(r) for r in recs})
    ncols = min(3, max(1, len(labels)))
    nrows = -(-max(1, len(labels)) // ncols)
    fig = new_figure(figsize=(4.4 * ncols, 4.0 * nrows))
    markers = {"dense": "s", "static": "o", "hybrid": "^", "dynamic": "D", "dynamic (matmul)": "d"}
    colors = {"dense": "tab:blue", "static": "tab:green", "hybrid": "tab:orange", "dynamic": "tab:red",
              "dynamic (matmul)": "tab:purple"}
    for k, label in enumerate(labels or ["no data"]):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.plot([0, 1.05], [0, 1.05], color="grey", lw=1, ls="--", label="latency = FLOPs")
        for r in (x for x in recs if runtime_label(x) == label):
            g = graph_label(r)
            ax.scatter(r["flops_ratio"], r["latency_ratio"]["p50"], marker=markers.get(g, "o"), s=40,
                       color=colors.get(g, "tab:gray"), label=g, alpha=0.85)
            ax.annotate(f"{r['manifest'].get('budget')}", (r["flops_ratio"], r["latency_ratio"]["p50"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        handles, names = ax.get_legend_handles_labels()
        uniq = dict(zip(names, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left")
        ax.set_xlim(0, 1.1)
        ax.set_ylim(0, max([1.2] + [r["latency_ratio"]["p50"] * 1.1 for r in recs if runtime_label(r) == label]))
        ax.set_xlabel("FLOPs / dense")
        ax.set_ylabel("p50 latency / dense")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def plot_per_input(records: list[dict], path: str | Path) -> None:
    """Dynamic graphs: per-input latency against per-input FLOPs."""
    from gatekit.plotting import new_figure, save_png

    recs = [r for r in records if r.get("per_input")]
    fig = new_figure(figsize=(6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for r in recs:
        macs = [p["macs"] / 1e6 for p in r["per_input"]]
        lat = [p["p50_ms"] for p in r["per_input"]]
        ax.scatter(macs, lat, s=8, alpha=0.6, label=f"{graph_label(r)} t_d={r['manifest'].get('budget')} {runtime_label(r)}")
    ax.set_xlabel("per-input MMACs (active channels)")
    ax.set_ylabel("per-input median latency (ms)")
    ax.grid(alpha=0.3)
    if recs:
        ax.legend(fontsize=7)
    save_png(fig, path)
