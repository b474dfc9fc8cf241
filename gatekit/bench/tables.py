"""Tables and plots from benchmark records: latency against FLOPs, as ratios to the same network's dense graph.

Records are grouped by the network they measure: architecture, width, input size, gate group and checkpoint
(its sha256, shown by a short name). A record's latency ratio is its p50 (p90) over the p50 (p90) of the dense
graph of the same checkpoint on the same runtime, provider, precision, threads and batch; a network pruned
from another checkpoint (`gatekit prune`) counts its FLOPs against that checkpoint's dense graph, and so does
its latency. A record without that dense graph keeps its latency, without a ratio, and says why.
"""

from __future__ import annotations

import json
from pathlib import Path

from gatekit.artifacts import RUNTIMES, runtime_display

# what the report reads of a benchmark record (checked by read_jsonl: one line naming file, line and field)
REPORT_FIELDS = {
    "runtime.name": str,
    "runtime.provider": (str, type(None)),
    "precision": str,
    "threads": (int, type(None)),
    "batch": int,
    "stats.p50_ms": (int, float),
    "stats.p90_ms": (int, float),
    "manifest.graph": str,
    "manifest.macs.ratio_to_dense": (int, float),
    "manifest.model_config.arch": str,
    "manifest.model_config.width": (int, float),
    "manifest.model_config.stem": str,
    "manifest.model_config.input_size": int,
    "manifest.model_config.gate_group": int,
}

GRAPH_ORDER = ("dense", "static", "hybrid", "dynamic")
SHORT_SHA = 8  # hex digits of a checkpoint's sha256 that name it (more where two checkpoints share them)
GRAPH_COLORS = {
    "dense": "tab:blue",
    "static": "tab:green",
    "hybrid": "tab:orange",
    "dynamic": "tab:red",
    "dynamic (matmul)": "tab:purple",
    "dynamic (native)": "tab:brown",
}
OTHER_COLORS = ("tab:pink", "tab:olive", "tab:cyan", "tab:gray", "black", "gold", "navy", "teal")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h", "d")  # then the same, hollow


def canonical_runtime(name) -> str:
    """The one name of a runtime ("onnxruntime" -> "ort"); a name gatekit does not know is kept as it is."""
    key = str(name).strip().lower()
    return next((r.name for r in RUNTIMES.values() if key == r.name or key in r.aliases), str(name))


def normalize_runtime_names(records: list[dict]) -> list[dict]:
    """Rewrites each record's runtime.name to the runtime's one name, in place (records written before the
    names were unified say "onnxruntime"), so that one runtime is one column."""
    for r in records:
        rt = r.get("runtime")
        if isinstance(rt, dict) and isinstance(rt.get("name"), str):
            rt["name"] = canonical_runtime(rt["name"])
    return records


def column_key(r: dict) -> tuple:
    """What a latency is measured on: runtime, provider, precision, threads, batch."""
    rt = r["runtime"]
    return (canonical_runtime(rt["name"]), rt.get("provider"), r["precision"], r["threads"], r["batch"])


def runtime_label(r: dict, provider: bool = False) -> str:
    name = runtime_display(r["runtime"]["name"])
    if provider and r["runtime"].get("provider"):
        name += f" {r['runtime']['provider']}"
    prec = "" if r["precision"] == "fp32" else f" {r['precision']}"
    return f"{name}{prec} {r['threads'] or 'default'}T b{r['batch']}"


def graph_label(r: dict) -> str:
    """The graph; for a dynamic graph in another form than NonZero + Gather + Conv, its form (a native-op
    graph: where its gate and projection shortcut run, when not in the op; and that it ran its standard-ops
    fallback); for a static graph pruned with --min-usage, the threshold."""
    m = r["manifest"]
    form = m.get("dynamic_form")
    if form == "native":
        op = m.get("native_op") or {}
        where = [f"{part} in graph" for part in ("gate", "shortcut") if op.get(part) == "graph"]
        if (r.get("runtime") or {}).get("ops") == "fallback":
            where.append(f"fallback {op.get('fallback_form', '')}".rstrip())
        form = ", ".join(["native"] + where)
    min_usage = (m.get("pruning") or {}).get("min_usage") or 0
    return (
        f"{m['graph']}{f' ({form})' if form and form != 'conv' else ''}"
        f"{f' min-usage {min_usage:g}' if min_usage else ''}"
    )


def network_key(r: dict) -> tuple:
    """The network a record measures: architecture, width, stem, input size, gate group, checkpoint sha256."""
    m = r["manifest"]
    c = m.get("model_config") or {}
    return (
        c.get("arch"),
        c.get("width"),
        c.get("stem"),
        c.get("input_size"),
        c.get("gate_group") or 1,
        m.get("checkpoint_sha256"),
    )


def _pruned_from(m: dict) -> str | None:
    pruned = m.get("pruned")
    return ((pruned.get("from") or {}).get("sha256")) if isinstance(pruned, dict) else None


def reference_key(r: dict) -> tuple | None:
    """The network whose dense graph a record's ratios are to: its own, or for a pruned network the one it
    was pruned from (its FLOPs ratio counts against that one). None where the record names no checkpoint."""
    m = r["manifest"]
    sha = _pruned_from(m) if isinstance(m.get("pruned"), dict) else m.get("checkpoint_sha256")
    return None if not sha else network_key(r)[:-1] + (sha,)


def checkpoint_names(records: list[dict]) -> dict[str, str]:
    """sha256 -> its short name: the first SHORT_SHA hex digits, more where two checkpoints share them."""
    shas = {r["manifest"].get("checkpoint_sha256") for r in records} | {_pruned_from(r["manifest"]) for r in records}
    shas = sorted(s for s in shas if isinstance(s, str) and s)
    n = SHORT_SHA
    while len({s[:n] for s in shas}) < len(shas):
        n += 4
    return {s: s[:n] for s in shas}


def network_label(r: dict, names: dict[str, str] | None = None) -> str:
    """ "resnet18 x0.25 32px 1409195f" (architecture, width, input size, gate group when > 1, checkpoint)."""
    arch, width, _, size, group, sha = network_key(r)
    parts = [
        arch or "",
        f"x{width:g}" if isinstance(width, (int, float)) else "",
        f"{size}px" if size else "",
        f"g{group}" if group and group > 1 else "",
        (names or {}).get(sha, sha[:SHORT_SHA]) if sha else "no checkpoint",
    ]
    return " ".join(p for p in parts if p)


def with_ratios(records: list[dict]) -> list[dict]:
    """Copies of the records with `flops_ratio`, `network` (its label) and either `latency_ratio` (p50 and p90
    over the dense graph of the same network on the same runtime, provider, precision, threads and batch; of
    several such dense records the latest) or `no_ratio` (why there is none: no such dense record, or no
    checkpoint named)."""
    names = checkpoint_names(records)
    dense: dict[tuple, dict] = {}
    for r in records:
        if r["manifest"]["graph"] == "dense" and not isinstance(r["manifest"].get("pruned"), dict):
            ref = reference_key(r)
            if ref is not None:
                dense[ref + column_key(r)] = r  # the latest record of each wins
    out = []
    for r in records:
        m = r["manifest"]
        r = dict(r, flops_ratio=m["macs"]["ratio_to_dense"], network=network_label(r, names))
        ref_key = reference_key(r)
        ref = dense.get(ref_key + column_key(r)) if ref_key is not None else None
        if ref is not None:
            r["latency_ratio"] = {q: r["stats"][f"{q}_ms"] / ref["stats"][f"{q}_ms"] for q in ("p50", "p90")}
        elif ref_key is None:
            r["no_ratio"] = (
                "the record does not name the checkpoint it was pruned from"
                if isinstance(m.get("pruned"), dict)
                else "the record names no checkpoint"
            )
        else:
            pruned = " (the checkpoint it was pruned from)" if isinstance(m.get("pruned"), dict) else ""
            r["no_ratio"] = f"no dense graph of checkpoint {names.get(ref_key[-1], ref_key[-1])}{pruned}"
        out.append(r)
    return out


def _columns(recs: list[dict]) -> dict[tuple, str]:
    """column key -> its label, in order; the provider is named where one runtime ran on two."""
    keys = {column_key(r): r for r in recs}
    providers: dict[tuple, set] = {}
    for name, provider, *_rest in keys:
        providers.setdefault(name, set()).add(provider)
    order = sorted(keys, key=lambda k: (runtime_display(k[0]), k[2] != "fp32", k[2], k[3] or 0, k[4], str(k[1])))
    return {k: runtime_label(keys[k], provider=len(providers[k[0]]) > 1) for k in order}


def _row_key(r: dict) -> tuple:
    """A table row: the network and the graph (its label, FLOPs ratio and widths: two graphs that differ in
    any of them never share a row)."""
    arch, width, stem, size, group, sha = network_key(r)
    m = r["manifest"]
    graph = m["graph"]
    return (
        str(arch),
        width or 0,
        str(stem),
        size or 0,
        group,
        m.get("budget") if m.get("budget") is not None else -1,
        str(sha),
        GRAPH_ORDER.index(graph) if graph in GRAPH_ORDER else len(GRAPH_ORDER),
        graph_label(r),
        round(m["macs"]["ratio_to_dense"], 6),
        json.dumps(m.get("widths")),
    )


def table_cells(records: list[dict]) -> tuple[dict[tuple, str], dict[tuple, dict]]:
    """(columns, rows): rows by _row_key in order, each {column key: the latest record there}."""
    recs = with_ratios(records)
    columns = _columns(recs)
    rows: dict[tuple, dict] = {}
    for r in recs:
        rows.setdefault(_row_key(r), {})[column_key(r)] = r
    return columns, dict(sorted(rows.items(), key=lambda kv: kv[0]))


def markdown_table(records: list[dict], notes: bool = True) -> str:
    """Rows: network x graph; columns: t_d, FLOPs ratio, then p50 / p90 ms and the p50 latency ratio per
    runtime, provider, precision, threads and batch. With `notes`, below it, why some records have no ratio
    (no_ratio_notes)."""
    columns, rows = table_cells(records)
    head = "| network | t_d | graph | FLOPs ratio |" + "".join(
        f" {c}: p50 / p90 ms (ratio) |" for c in columns.values()
    )
    lines = [head, "|---|---:|---|---:|" + "---:|" * len(columns)]
    for cells in rows.values():
        r = next(iter(cells.values()))
        out = []
        for c in columns:
            x = cells.get(c)
            if x is None:
                out.append("-")
                continue
            ratio = f"{x['latency_ratio']['p50']:.2f}" if "latency_ratio" in x else "no ratio"
            out.append(f"{x['stats']['p50_ms']:.3f} / {x['stats']['p90_ms']:.3f} ({ratio})")
        lines.append(
            f"| {r['network']} | {r['manifest'].get('budget')} | {graph_label(r)} | {r['flops_ratio']:.3f} | "
            + " | ".join(out)
            + " |"
        )
    why = _notes(columns, rows) if notes else []
    return "\n".join(lines + ([""] + [f"- {x}" for x in why] if why else []))


def no_ratio_notes(records: list[dict]) -> list[str]:
    """One line per network with cells of markdown_table that have no latency ratio, saying why."""
    return _notes(*table_cells(records))


def _notes(columns: dict[tuple, str], rows: dict[tuple, dict]) -> list[str]:
    ran: dict[str, set] = {}  # network -> the columns it has cells in
    missing: dict[str, dict[str, set]] = {}  # network -> why -> the columns where its cells have no ratio
    for cells in rows.values():
        for c, x in cells.items():
            ran.setdefault(x["network"], set()).add(c)
            if "no_ratio" in x:
                missing.setdefault(x["network"], {}).setdefault(x["no_ratio"], set()).add(c)
    out = []
    for net, reasons in missing.items():
        parts = []
        for reason, where in reasons.items():
            if not reason.startswith("no dense"):
                parts.append(reason)
            elif where == ran[net]:
                parts.append(f"{reason} was measured")
            else:
                parts.append(f"{reason} on {', '.join(columns[c] for c in columns if c in where)}")
        out.append(f"{net} has no latency ratio: {'; '.join(parts)}; its latencies are shown alone.")
    return out


def _legend_name(x: dict) -> str:
    return f"{x['network']}, t_d {x['manifest'].get('budget')}"


def _styles(networks: list[str]) -> dict[str, dict]:
    """One marker style per network: MARKERS filled, then hollow, then again."""
    n = len(MARKERS)
    return {name: {"marker": MARKERS[k % n], "hollow": (k // n) % 2 == 1} for k, name in enumerate(networks)}


def _colors(graphs: list[str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * (1 + len(graphs) // len(OTHER_COLORS)))
    return {g: GRAPH_COLORS.get(g) or next(others) for g in graphs}


def plot_latency_vs_flops(records: list[dict], path: str | Path, title: str | None = None):
    """Latency ratio (p50) against FLOPs ratio, one panel per runtime, provider, precision, threads and batch
    (so int8 and fp32 each have their own dense reference), the proportional line drawn. The points are the
    cells of markdown_table: one marker style per network, one colour per graph, the legend outside the panels.
    Returns the figure written to `path`."""
    from matplotlib.lines import Line2D

    from gatekit.plotting import legend_outside, new_figure, save_png

    columns, rows = table_cells(records)
    cells = [x for row in rows.values() for x in row.values()]
    networks = list(dict.fromkeys(_legend_name(x) for x in cells))
    styles = _styles(networks)
    graphs = list(dict.fromkeys(graph_label(x) for x in cells))
    colors = _colors(graphs)
    ncols = min(3, max(1, len(columns)))
    nrows = -(-max(1, len(columns)) // ncols)
    fig = new_figure(figsize=(4.2 * ncols + 3.2, 3.9 * nrows), layout="constrained")
    for k, (col, label) in enumerate(columns.items() or [(None, "no data")]):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.plot([0, 1.05], [0, 1.05], color="grey", lw=1, ls="--")
        here = [x for x in cells if column_key(x) == col]
        drawn = [x for x in here if "latency_ratio" in x]
        for x in drawn:
            net = _legend_name(x)
            s, color = styles[net], colors[graph_label(x)]
            ax.scatter(
                x["flops_ratio"],
                x["latency_ratio"]["p50"],
                marker=s["marker"],
                s=42,
                alpha=0.85,
                linewidths=1.2,
                facecolors="none" if s["hollow"] else color,
                edgecolors=color,
                gid=f"{net}: {graph_label(x)}",
            )
        ax.set_xlim(0, 1.1)
        ax.set_ylim(0, max([1.2] + [x["latency_ratio"]["p50"] * 1.1 for x in drawn]))
        ax.set_xlabel("FLOPs / dense")
        ax.set_ylabel("p50 latency / same network's dense")
        missing = len(here) - len(drawn)
        ax.set_title(label + (f"\n{missing} without a dense reference, not drawn" if missing else ""), fontsize=9)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color="grey", lw=1, ls="--", label="latency = FLOPs")]
    handles += [Line2D([], [], ls="none", marker="s", color=colors[g], label=g) for g in graphs]
    drawn_any = {_legend_name(x) for x in cells if "latency_ratio" in x}
    handles += [
        Line2D(
            [],
            [],
            ls="none",
            marker=s["marker"],
            color="black",
            markerfacecolor="none" if s["hollow"] else "black",
            label=n if n in drawn_any else f"{n}: no dense reference, not drawn",
        )
        for n, s in styles.items()
    ]
    legend_outside(fig, handles, ncols=1 + len(handles) // (14 * nrows + 8))
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path)
    return fig


def plot_per_input(records: list[dict], path: str | Path) -> None:
    """Dynamic graphs: per-input latency against per-input FLOPs, one series per network, graph and runtime,
    a marker style per network; the legend beside the axes."""
    from gatekit.plotting import legend_outside, new_figure, save_png

    names = checkpoint_names(records)
    recs = [r for r in records if r.get("per_input")]
    styles = _styles(list(dict.fromkeys(network_label(r, names) for r in recs)))
    fig = new_figure(figsize=(9.0, max(4.2, 0.16 * len(recs) + 0.8)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for k, r in enumerate(recs):
        macs = [p["macs"] / 1e6 for p in r["per_input"]]
        lat = [p["p50_ms"] for p in r["per_input"]]
        net, color = network_label(r, names), f"C{k % 10}"
        ax.scatter(
            macs,
            lat,
            s=8,
            alpha=0.6,
            marker=styles[net]["marker"],
            edgecolors=color,
            facecolors="none" if styles[net]["hollow"] else color,
            label=f"{net} t_d={r['manifest'].get('budget')} {graph_label(r)} {runtime_label(r)}",
        )
    ax.set_xlabel("per-input MMACs (active channels)")
    ax.set_ylabel("per-input median latency (ms)")
    ax.grid(alpha=0.3)
    if recs:
        legend_outside(fig, markerscale=1.5)
    save_png(fig, path)
