"""`gatekit report`: results of two devices merged into one page, a section and a PNG per target, and HTML."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatekit.bench.report import group_by_target, load_records, target_key, target_label
from gatekit.cli import cli
from gatekit.errors import GatekitError

REPO = Path(__file__).resolve().parent.parent
RECORDED = REPO / "benchmarks" / "bench_cpu" / "cifar32-width0.25.jsonl"
PNG = b"\x89PNG\r\n\x1a\n"

JETSON_MACHINE = {
    "cpu": "ARMv8 Processor rev 1 (v8l)",
    "cores": 6,
    "governor": "schedutil",
    "machine": "aarch64",
    "os": "Linux-5.15.136-tegra-aarch64-with-glibc2.35",
    "python": "3.10.12",
    "gatekit": "0.1.0",
    "git_sha": "76fb44bf100d",
    "packages": {"numpy": "1.26.4", "onnxruntime": "1.19.0"},
    "gpu": None,
    "jetson": {
        "board": "NVIDIA Jetson Orin Nano Developer Kit",
        "l4t": {"l4t": "36.3.0", "major": 36, "jetpack_major": 6, "board": "generic"},
        "power_mode": {"mode_name": "15W", "mode_id": 2},
        "clocks": {"locked": True, "reasons": []},
    },
}


def recorded_records(runtime="onnxruntime", threads=1):
    """Real records of this CPU: ORT, one thread, dense and static graphs."""
    recs = [json.loads(x) for x in RECORDED.read_text().splitlines() if x.strip()]
    keep = [
        r
        for r in recs
        if r["runtime"]["name"] == runtime and r["threads"] == threads and r["manifest"]["graph"] in ("dense", "static")
    ]
    assert len(keep) >= 4
    return keep


def jetson_records(cpu_records):
    """The same artifacts on a second device: its machine, other latencies, tegrastats power."""
    out = []
    for r in cpu_records:
        r = copy.deepcopy(r)
        r["machine"] = copy.deepcopy(JETSON_MACHINE)
        r["time"] = r["time"].replace("2026-11-24", "2026-11-25")
        r["stats"] = {k: (v * 2.5 if k.endswith("_ms") else v) for k, v in r["stats"].items()}
        r["power"] = {
            "source": "tegrastats",
            "samples": 90,
            "malformed_lines": 0,
            "interval_ms": 100,
            "mean_power_mw": 5200.0,
            "max_power_mw": 6100,
            "power_rail": "VDD_IN",
            "mean_gpu_load_pct": 0.0,
            "max_temp_c": 51.5,
            "mean_rails_mw": {"VDD_IN": 5200.0},
        }
        out.append(r)
    return out


@pytest.fixture
def two_devices(tmp_path):
    cpu = recorded_records()
    a, b = tmp_path / "epyc.jsonl", tmp_path / "orin.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in cpu))
    b.write_text("".join(json.dumps(r) + "\n" for r in jetson_records(cpu)))
    return a, b, cpu


def test_targets_group_by_machine_and_label_the_jetson(two_devices):
    a, b, cpu = two_devices
    targets = group_by_target(load_records([a, b, a]))  # the same file twice: one target per machine, no doubles
    assert len(targets) == 2
    assert [len(t.records) for t in targets] == [len(cpu), len(cpu)]
    assert [t.sources for t in targets] == [[str(a)], [str(b)]]
    assert [r["time"] for r in targets[0].records] == sorted(r["time"] for r in cpu)
    assert targets[0].label == "AMD EPYC, 2 cores"
    assert targets[1].label == (
        "NVIDIA Jetson Orin Nano Developer Kit (L4T 36.3.0), power mode 15W, clocks locked; "
        "ARMv8 Processor rev 1 (v8l), 6 cores"
    )
    gpu_machine = dict(cpu[0]["machine"], gpu={"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15"})
    assert target_key(gpu_machine) != target_key(cpu[0]["machine"])
    assert target_label(gpu_machine).endswith("; GPU NVIDIA H100 80GB HBM3")
    other_mode = copy.deepcopy(JETSON_MACHINE)
    other_mode["jetson"]["power_mode"] = {"mode_name": "7W", "mode_id": 1}
    assert target_key(other_mode) != target_key(JETSON_MACHINE)  # a power mode is another target


def test_report_command_writes_two_sections_two_pngs_html_and_json(two_devices, tmp_path):
    a, b, cpu = two_devices
    out, html, plots, js = (
        tmp_path / "page" / "edge.md",
        tmp_path / "page" / "edge.html",
        tmp_path / "plots",
        tmp_path / "edge.json",
    )
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(a),
            str(b),
            "--out",
            str(out),
            "--html",
            str(html),
            "--plots-dir",
            str(plots),
            "--json",
            str(js),
        ],
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    sections = re.findall(r"^## Target \d+: (.+)$", page, flags=re.M)
    assert sections == [
        "AMD EPYC, 2 cores",
        "NVIDIA Jetson Orin Nano Developer Kit (L4T 36.3.0), power mode 15W, clocks locked; "
        "ARMv8 Processor rev 1 (v8l), 6 cores",
    ]
    pngs = sorted(plots.glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == PNG for p in pngs)
    for p in pngs:  # linked relative to the page
        assert f"](../plots/{p.name})" in page
    # one table per target, with the recorded numbers: static p50 and its ratio to dense on ORT 1T
    assert page.count("| network | t_d | graph | FLOPs ratio |") == 2
    static = next(r for r in cpu if r["manifest"]["graph"] == "static")
    dense = next(
        r for r in cpu if r["manifest"]["graph"] == "dense" and r["manifest"]["budget"] == static["manifest"]["budget"]
    )
    ratio = static["stats"]["p50_ms"] / dense["stats"]["p50_ms"]
    cell = f"{static['stats']['p50_ms']:.3f} / {static['stats']['p90_ms']:.3f} ({ratio:.2f})"
    jetson_cell = f"{2.5 * static['stats']['p50_ms']:.3f} / {2.5 * static['stats']['p90_ms']:.3f} ({ratio:.2f})"
    first, second = page.split("## Target 2:")
    assert cell in first and jetson_cell in second and jetson_cell not in first
    # the Jetson's power table: 5.2 W mean, energy = power x mean latency
    assert "### Power (tegrastats, whole board)" in second and "### Power" not in first
    assert f"| 5.20 / 6.10 | 0% | 51.5 | {5200 * 2.5 * static['stats']['mean_ms'] / 1000:.2f} |" in second
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<h2>") == 2 and text.count("<table>") == 3
    assert all(f'src="../plots/{p.name}"' in text for p in pngs)
    assert "&lt;" not in text.split("<body>")[0]
    summary = json.loads(js.read_text())
    assert [t["records"] for t in summary["targets"]] == [len(cpu), len(cpu)]
    assert sorted(Path(t["plot"]).name for t in summary["targets"]) == [p.name for p in pngs]


def test_default_plots_dir_is_beside_the_page(two_devices, tmp_path):
    a, b, _ = two_devices
    result = CliRunner().invoke(cli, ["report", str(a), str(b), "--out", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "r-plots").glob("*.png"))) == 2
    assert not (tmp_path / "r.html").exists()


def run_gatekit(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "gatekit", *args], capture_output=True, text=True, env=env, timeout=120, cwd=REPO
    )


def one_line_error(proc, pattern):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and pattern in lines[0], proc.stderr


def test_missing_and_corrupt_files_are_one_line_errors_and_write_nothing(two_devices, tmp_path):
    a, _, _ = two_devices
    out = tmp_path / "r.md"
    one_line_error(run_gatekit("report", str(a), str(tmp_path / "nope.jsonl"), "--out", str(out)), "no results file at")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(a.read_text().splitlines()[0] + "\n{not json\n")
    one_line_error(run_gatekit("report", str(a), str(bad), "--out", str(out)), "bad.jsonl:2 is not JSON")
    assert not out.exists()


def test_records_without_the_fields_of_a_page_are_refused(tmp_path):
    p = tmp_path / "thin.jsonl"
    p.write_text(json.dumps({"schema": "gatekit.bench/1", "stats": {}}) + "\n")
    with pytest.raises(GatekitError, match="thin.jsonl:1 lacks "):
        load_records([p])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(GatekitError, match="holds no benchmark records"):
        load_records([tmp_path / "empty.jsonl"])


def test_report_help_has_an_example():
    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "--html" in result.output


FULLWIDTH = REPO / "benchmarks" / "bench_cpu" / "cifar32-fullwidth.jsonl"


def table_rows(page: str) -> dict[tuple[str, str, str], list[str]]:
    """(network, t_d, graph) -> the row's cells after the graph, from every table on a page."""
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| resnet") and len(cells) > 4:
            assert tuple(cells[:3]) not in rows, f"two rows for {cells[:3]}"
            rows[tuple(cells[:3])] = cells[3:]
    return rows


def cell(r: dict, dense: dict | None) -> str:
    ratio = f"({r['stats']['p50_ms'] / dense['stats']['p50_ms']:.2f})" if dense else "(no ratio)"
    return f"{r['stats']['p50_ms']:.3f} / {r['stats']['p90_ms']:.3f} {ratio}"


def test_two_recorded_networks_at_one_t_d_keep_their_own_rows_and_dense(tmp_path):
    """The recorded x0.25 and full-width files, both with a t_d 0.3 checkpoint, on one page: each network's
    static row has its own FLOPs ratio and latency and its ratio is to its own dense graph; the full-width
    t_d 0.1 and 0.5 checkpoints, recorded without a dense graph, keep their latencies and no ratio."""
    out, js = tmp_path / "r.md", tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["report", str(RECORDED), str(FULLWIDTH), "--out", str(out), "--json", str(js)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    rows = table_rows(page)
    header = next(line for line in page.splitlines() if line.startswith("| network |"))
    ort1 = [c.strip() for c in header.strip("|").split("|")].index("ORT 1T b1: p50 / p90 ms (ratio)") - 3
    recs = [json.loads(x) for f in (RECORDED, FULLWIDTH) for x in f.read_text().splitlines() if x.strip()]
    ort = [r for r in recs if r["runtime"]["name"] == "onnxruntime" and r["threads"] == 1]

    def of(sha, graph):
        m = [r for r in ort if r["manifest"]["checkpoint_sha256"] == sha and r["manifest"]["graph"] == graph]
        return m[0] if m else None

    static_03 = [r for r in ort if r["manifest"]["budget"] == 0.3 and r["manifest"]["graph"] == "static"]
    assert len({r["manifest"]["checkpoint_sha256"] for r in static_03}) == 2  # the two networks at t_d 0.3
    for static in static_03:
        sha, width = static["manifest"]["checkpoint_sha256"], static["manifest"]["model_config"]["width"]
        net = f"resnet18 x{width:g} 32px {sha[:8]}"
        dense = of(sha, "dense")
        assert rows[(net, "0.3", "static")][0] == f"{static['manifest']['macs']['ratio_to_dense']:.3f}"
        assert rows[(net, "0.3", "static")][ort1] == cell(static, dense)
        assert rows[(net, "0.3", "dense")][ort1] == cell(dense, dense)
    widths = {r["manifest"]["checkpoint_sha256"]: r["manifest"]["model_config"]["width"] for r in recs}
    static_rows = [k for k in rows if k[2] == "static"]
    assert len(static_rows) == len({r["manifest"]["checkpoint_sha256"] for r in recs}) == 6
    # the full-width t_d 0.1 and 0.5 checkpoints have no dense graph of their own in the records
    lone = sorted(
        {r["manifest"]["checkpoint_sha256"] for r in recs}
        - {r["manifest"]["checkpoint_sha256"] for r in recs if r["manifest"]["graph"] == "dense"}
    )
    assert len(lone) == 2 and all(widths[sha] == 1.0 for sha in lone)
    for sha in lone:
        static = of(sha, "static")
        net = f"resnet18 x1 32px {sha[:8]}"
        row = rows[(net, str(static["manifest"]["budget"]), "static")]
        assert row[ort1] == cell(static, None)
        assert all(c == "-" or c.endswith("(no ratio)") for c in row[1:])
        assert f"{net} has no latency ratio: no dense graph of checkpoint {sha[:8]} was measured" in page
    notes = [x for x in page.splitlines() if "has no latency ratio" in x]
    assert json.loads(js.read_text())["targets"][0]["no_ratio"] == notes


def test_old_and_new_runtime_names_are_one_runtime(tmp_path):
    """Records that say "onnxruntime" (older) and "ort" (newer): one column, one runtime on the page, and a
    static graph recorded as "ort" takes its ratio to the dense graph recorded as "onnxruntime"."""
    old = recorded_records()
    new = [dict(r, runtime=dict(r["runtime"], name="ort")) for r in old if r["manifest"]["graph"] == "static"]
    mixed = [r for r in old if r["manifest"]["graph"] == "dense"] + new
    p = tmp_path / "mixed.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in mixed))
    assert {r["runtime"]["name"] for _, r in load_records([p])} == {"ort"}
    result = CliRunner().invoke(cli, ["report", str(p), "--out", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.md").read_text()
    assert "onnxruntime" not in page
    assert page.count("ORT 1T b1: p50 / p90 ms (ratio)") == 1
    runtimes = next(x for x in page.splitlines() if x.startswith("Runtimes:"))
    assert runtimes == "Runtimes: ORT 1.32.0 (CPUExecutionProvider)."
    rows = table_rows(page)
    for static in new:
        m = static["manifest"]
        dense = next(
            r
            for r in old
            if r["manifest"]["graph"] == "dense" and r["manifest"]["checkpoint_sha256"] == m["checkpoint_sha256"]
        )
        assert rows[(f"resnet18 x0.25 32px {m['checkpoint_sha256'][:8]}", str(m["budget"]), "static")] == [
            f"{m['macs']['ratio_to_dense']:.3f}",
            cell(static, dense),
        ]


def test_a_record_without_its_dense_reference_shows_its_latency_alone(tmp_path):
    """The dense graph of one checkpoint left out: its static graph keeps its latency, takes no other
    checkpoint's dense graph as its reference, and the page says why; the other checkpoints keep ratios."""
    recs = recorded_records()
    lone = next(r for r in recs if r["manifest"]["graph"] == "static" and r["manifest"]["budget"] == 0.5)
    sha = lone["manifest"]["checkpoint_sha256"]
    kept = [r for r in recs if not (r["manifest"]["graph"] == "dense" and r["manifest"]["checkpoint_sha256"] == sha)]
    p = tmp_path / "no-dense.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in kept))
    out = tmp_path / "r.md"
    result = CliRunner().invoke(cli, ["report", str(p), "--out", str(out), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    rows = table_rows(page)
    net = f"resnet18 x0.25 32px {sha[:8]}"
    assert rows[(net, "0.5", "static")] == [f"{lone['manifest']['macs']['ratio_to_dense']:.3f}", cell(lone, None)]
    assert (
        f"{net} has no latency ratio: no dense graph of checkpoint {sha[:8]} was measured; "
        "its latencies are shown alone."
    ) in page.splitlines()
    others = [k for k in rows if k[0] != net]
    assert len(others) == 4 and all(rows[k][1].endswith(")") and "(no ratio)" not in rows[k][1] for k in others)
    assert "has no latency ratio" in (tmp_path / "r.html").read_text().split("</table>")[1]  # a paragraph, not a row
    # a record that names no checkpoint cannot be paired with any dense graph
    from gatekit.bench.tables import with_ratios

    anonymous = copy.deepcopy(kept)
    for r in anonymous:
        r["manifest"]["checkpoint_sha256"] = None
    assert {r["no_ratio"] for r in with_ratios(anonymous)} == {"the record names no checkpoint"}
