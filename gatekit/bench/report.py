"""`gatekit report`: benchmark results from several devices merged into one page, one section per target.

A target is the machine a record was measured on: CPU model and cores, the GPU's name, and on a Jetson
the board and its nvpmodel power mode. Each section has the table of `gatekit bench` (rows network x graph,
a network being one checkpoint of one architecture, width, input size and gate group; FLOPs ratio; p50 / p90
and the latency ratio to that network's dense graph on the same runtime, precision, threads and batch) and the
plot of latency ratio against FLOPs ratio, from gatekit.bench.tables.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from gatekit.artifacts import runtime_display
from gatekit.bench.run import read_jsonl
from gatekit.bench.tables import (
    REPORT_FIELDS,
    checkpoint_names,
    graph_label,
    markdown_table,
    network_label,
    no_ratio_notes,
    plot_latency_vs_flops,
    runtime_label,
)
from gatekit.errors import GatekitError

REQUIRED = ("manifest", "runtime", "stats", "machine", "threads", "batch", "precision")


@dataclass
class Target:
    key: tuple
    label: str
    records: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def machine(self) -> dict:
        return self.records[-1]["machine"]


def target_key(machine: dict) -> tuple:
    gpu = machine.get("gpu") or {}
    jetson = machine.get("jetson") or {}
    mode = (jetson.get("power_mode") or {}).get("mode_name")
    return (machine.get("cpu"), machine.get("cores"), gpu.get("name"), jetson.get("board"), mode)


def target_label(machine: dict) -> str:
    cpu, cores, gpu, board, mode = target_key(machine)
    parts = [f"{cpu or 'unknown CPU'}, {cores or '?'} cores"]
    if board:
        jetson = machine["jetson"]
        clocks = (jetson.get("clocks") or {}).get("locked")
        l4t = (jetson.get("l4t") or {}).get("l4t")
        parts.insert(
            0,
            board
            + (f" (L4T {l4t})" if l4t else "")
            + (f", power mode {mode}" if mode else "")
            + {True: ", clocks locked", False: ", clocks not locked"}.get(clocks, ""),
        )
    if gpu:
        parts.append(f"GPU {gpu}")
    return "; ".join(parts)


def load_records(paths, trust_edited: bool = False) -> list[tuple[str, dict]]:
    """(source file, record) for every record, checked for the fields the page uses; a record measured on an
    edited artifact (`bench --trust-edited`) only with `trust_edited`."""
    out = []
    for p in paths:
        records = read_jsonl(
            [p], REPORT_FIELDS, edited_ok=trust_edited
        )  # missing file, a line that is not JSON, another schema: one-line errors
        for k, r in enumerate(records, 1):
            missing = [f for f in REQUIRED if f not in r]
            if missing:
                raise GatekitError(f"{p}: record {k} lacks {', '.join(missing)}: not a `gatekit bench --json` record")
        if not records:
            raise GatekitError(f"{p} holds no benchmark records")
        out += [(str(p), r) for r in records]
    return out


def group_by_target(pairs: list[tuple[str, dict]]) -> list[Target]:
    """Targets in order of first appearance; each target's records in time order (the latest last). A
    record seen twice (the same file given twice, or concatenated results) counts once."""
    targets: dict[tuple, Target] = {}
    seen: set[str] = set()
    for source, r in pairs:
        key = target_key(r["machine"])
        t = targets.setdefault(key, Target(key, target_label(r["machine"])))
        if source not in t.sources:
            t.sources.append(source)
        fingerprint = json.dumps(r, sort_keys=True)
        if fingerprint not in seen:
            seen.add(fingerprint)
            t.records.append(r)
    for t in targets.values():
        t.records.sort(key=lambda r: r.get("time") or "")
    return list(targets.values())


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "target"


def _power_table(records: list[dict]) -> str | None:
    """Jetson records: mean board power and the energy of one run at the mean latency."""
    rows = [r for r in records if r.get("power") and r["power"].get("mean_power_mw") is not None]
    if not rows:
        return None
    names = checkpoint_names(records)
    lines = [
        "| network | t_d | graph | runtime | mean / max power (W) | mean GPU load | max temp (C) "
        "| energy per run (mJ) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p, m = r["power"], r["manifest"]
        energy = p["mean_power_mw"] * r["stats"]["mean_ms"] / 1000 if "mean_ms" in r["stats"] else None
        gpu = f"{p['mean_gpu_load_pct']:.0f}%" if p.get("mean_gpu_load_pct") is not None else "-"
        temp = f"{p['max_temp_c']:.1f}" if p.get("max_temp_c") is not None else "-"
        lines.append(
            f"| {network_label(r, names)} | {m.get('budget')} | {graph_label(r)} | {runtime_label(r)} | "
            f"{p['mean_power_mw'] / 1000:.2f} / "
            f"{p['max_power_mw'] / 1000:.2f} | {gpu} | {temp} | "
            + (f"{energy:.2f}" if energy is not None else "-")
            + " |"
        )
    return "\n".join(lines)


def _describe(t: Target) -> list[str]:
    m = t.machine
    runtimes = sorted(
        {
            f"{runtime_display(r['runtime']['name'])} {r['runtime'].get('version', '')} "
            f"({r['runtime'].get('provider')})"
            for r in t.records
        }
    )
    lines = [
        f"{len(t.records)} records from {', '.join(Path(s).name for s in t.sources)}; "
        f"measured {t.records[0].get('time', '?')} to {t.records[-1].get('time', '?')}.",
        f"Machine: {m.get('machine', '?')}, {m.get('os', '?')}, Python {m.get('python', '?')}, governor "
        f"{m.get('governor') or 'n/a'}, gatekit {m.get('gatekit', '?')} ({m.get('git_sha') or 'no git sha'}).",
        "Runtimes: " + "; ".join(runtimes) + ".",
    ]
    gpu = m.get("gpu")
    if gpu:
        lines.append(
            f"GPU: {gpu['name']} (driver {gpu.get('driver', '?')}"
            + (f", {gpu['count']} GPUs" if gpu.get("count", 1) > 1 else "")
            + ")."
        )
    jetson = m.get("jetson")
    if jetson:
        clocks = jetson.get("clocks") or {}
        if clocks and not clocks.get("locked"):
            lines.append(
                "Clocks not locked ("
                + "; ".join(clocks.get("reasons", [])[:3])
                + "): run `sudo jetson_clocks` before timing."
            )
    return lines


def build_report(
    paths,
    out: str | os.PathLike,
    plots_dir: str | os.PathLike | None = None,
    html_path: str | os.PathLike | None = None,
    trust_edited: bool = False,
) -> dict:
    """Writes the Markdown page (atomically), one PNG per target and, if asked, an HTML page; returns a
    summary (targets, their record counts and plot paths)."""
    from gatekit.atomic import write_text

    if not paths:
        raise GatekitError("report needs at least one results file (JSON lines from `gatekit bench --json`)")
    targets = group_by_target(load_records(paths, trust_edited))
    out = Path(out)
    plots_dir = Path(plots_dir) if plots_dir else out.with_name(out.stem + "-plots")
    blocks: list[tuple] = [
        ("h1", "gatekit benchmark report"),
        (
            "p",
            f"{sum(len(t.records) for t in targets)} records from {len(paths)} file(s), "
            f"{len(targets)} target(s). Rows are networks (architecture, width, input size, gate "
            "group and checkpoint, named by the first digits of its sha256) and their graphs. "
            "A latency ratio is p50 over the p50 of the same network's dense graph (a pruned "
            "network: the dense graph of the checkpoint it was pruned from) on the same runtime, "
            "precision, threads and batch; a record without one shows its latency alone and the "
            "line below the table says why. Where a graph was measured more than once on one "
            "runtime, the latest record is shown. In the plots the dashed line is latency "
            "proportional to FLOPs.",
        ),
    ]
    summary = []
    for k, t in enumerate(targets, 1):
        png = plots_dir / f"target-{k}-{slug(t.label)}.png"
        plot_latency_vs_flops(t.records, png, title=t.label)
        table, notes = markdown_table(t.records, notes=False), no_ratio_notes(t.records)
        blocks += [("h2", f"Target {k}: {t.label}")] + [("p", x) for x in _describe(t)]
        blocks += [("table", table)] + [("p", x) for x in notes]
        blocks += [("img", png, f"latency ratio against FLOPs ratio on {t.label}")]
        power = _power_table(t.records)
        if power:
            blocks += [("h3", "Power (tegrastats, whole board)"), ("table", power)]
        summary.append(
            {
                "target": t.label,
                "key": list(t.key),
                "records": len(t.records),
                "sources": t.sources,
                "plot": str(png),
                "table": table,
                "no_ratio": notes,
                "power_table": power,
            }
        )
    write_text(out, render_markdown(blocks, out.parent))
    if html_path:
        write_text(html_path, render_html(blocks, Path(html_path).parent))
    return {"page": str(out), "html": str(html_path) if html_path else None, "targets": summary}


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def render_markdown(blocks: list[tuple], base: Path) -> str:
    parts = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + b[1])
        elif kind in ("p", "table"):
            parts.append(b[1])
        elif kind == "img":
            parts.append(f"![{b[2]}]({_rel(b[1], base)})")
    return "\n\n".join(parts) + "\n"


def _table_html(table: str) -> str:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines() if line.strip()]
    head, body = rows[0], [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out + ["</tbody>", "</table>"])


def render_html(blocks: list[tuple], base: Path) -> str:
    title = next((b[1] for b in blocks if b[0] == "h1"), "gatekit report")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}"
        "img{max-width:100%}</style>",
        "</head>",
        "<body>",
    ]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "table":
            parts.append(_table_html(b[1]))
        elif kind == "img":
            parts.append(f'<p><img src="{html.escape(_rel(b[1], base))}" alt="{html.escape(b[2])}"></p>')
    return "\n".join(parts + ["</body>", "</html>"]) + "\n"
