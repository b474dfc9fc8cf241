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

from gatekit.bench.targets import group_by_target, load_records, target_key, target_label
from gatekit.cli import cli
from gatekit.errors import GatekitError

REPO = Path(__file__).resolve().parent.parent
RECORDED = REPO / "benchmarks" / "bench_cpu" / "cifar32-width0.25.jsonl"
PNG = b"\x89PNG\r\n\x1a\n"

JETSON_MACHINE = {
    "cpu": "ARMv8 Processor rev 1 (v8l)", "cores": 6, "governor": "schedutil", "machine": "aarch64",
    "os": "Linux-5.15.136-tegra-aarch64-with-glibc2.35", "python": "3.10.12", "gatekit": "0.1.0", "git_sha": "76fb44bf100d",
    "packages": {"numpy": "1.26.4", "onnxruntime": "1.19.0"},
    "gpu": None,
    "jetson": {"board": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": {"l4t": "36.3.0", "major": 36, "jetpack_major": 6, "board": "generic"},
               "power_mode": {"mode_name": "15W", "mode_id": 2}, "clocks": {"locked": True, "reasons": []}},
}


def recorded_records(runtime="onnxruntime", threads=1):
    """Real records of this CPU: ORT, one thread, dense and static graphs."""
    recs = [json.loads(x) for x in RECORDED.read_text().splitlines() if x.strip()]
    keep = [r for r in recs if r["runtime"]["name"] == runtime and r["threads"] == threads
            and r["manifest"]["graph"] in ("dense", "static")]
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
        r["power"] = {"source": "tegrastats", "samples": 90, "malformed_lines": 0, "interval_ms": 100,
                      "mean_power_mw": 5200.0, "max_power_mw": 6100, "power_rail": "VDD_IN", "mean_gpu_load_pct": 0.0,
                      "max_temp_c": 51.5, "mean_rails_mw": {"VDD_IN": 5200.0}}
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
    assert targets[1].label == ("NVIDIA Jetson Orin Nano Developer Kit (L4T 36.3.0), power mode 15W, clocks locked; "
                                "ARMv8 Processor rev 1 (v8l), 6 cores")
    gpu_machine = dict(cpu[0]["machine"], gpu={"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15"})
    assert target_key(gpu_machine) != target_key(cpu[0]["machine"])
    assert target_label(gpu_machine).endswith("; GPU NVIDIA H100 80GB HBM3")
    other_mode = copy.deepcopy(JETSON_MACHINE)
    other_mode["jetson"]["power_mode"] = {"mode_name": "7W", "mode_id": 1}
    assert target_key(other_mode) != target_key(JETSON_MACHINE)  # a power mode is another target


def test_report_command_writes_two_sections_two_pngs_html_and_json(two_devices, tmp_path):
    a, b, cpu = two_devices
    out, html, plots, js = tmp_path / "page" / "edge.md", tmp_path / "page" / "edge.html", tmp_path / "plots", tmp_path / "edge.json"
    result = CliRunner().invoke(cli, ["report", str(a), str(b), "--out", str(out), "--html", str(html),
                                      "--plots-dir", str(plots), "--json", str(js)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    sections = re.findall(r"^## Target \d+: (.+)$", page, flags=re.M)
    assert sections == ["AMD EPYC, 2 cores",
                        "NVIDIA Jetson Orin Nano Developer Kit (L4T 36.3.0), power mode 15W, clocks locked; "
                        "ARMv8 Processor rev 1 (v8l), 6 cores"]
    pngs = sorted(plots.glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == PNG for p in pngs)
    for p in pngs:  # linked relative to the page
        assert f"](../plots/{p.name})" in page
    # one table per target, with the recorded numbers: static p50 and its ratio to dense on ORT 1T
    assert page.count("| t_d | input | graph | FLOPs ratio |") == 2
    static = next(r for r in cpu if r["manifest"]["graph"] == "static")
    dense = next(r for r in cpu if r["manifest"]["graph"] == "dense" and r["manifest"]["budget"] == static["manifest"]["budget"])
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
    return subprocess.run([sys.executable, "-m", "gatekit", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


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
