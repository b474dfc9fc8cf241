"""Jetson metadata on recorded outputs: tegrastats (JetPack 4 to 6), nvpmodel, jetson_clocks, nv_tegra_release;
the tegrastats monitor against a fake tegrastats on PATH, inside a real ONNX Runtime benchmark; gpu_info."""

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from gatekit.errors import GatekitError
from gatekit.jetson import (
    TegrastatsMonitor,
    jetson_info,
    max_temperature,
    parse_jetson_clocks,
    parse_l4t_release,
    parse_nvpmodel,
    parse_tegrastats,
)

DATA = Path(__file__).resolve().parent / "data"
TEGRA = DATA / "tegrastats"
JETSON = DATA / "jetson"


def lines(name):
    return [x for x in (TEGRA / name).read_text().splitlines() if x.strip()]


def test_orin_jetpack6_line_with_timestamp():
    s = parse_tegrastats(lines("orin-nano-jp6.txt")[0])
    assert (s["ram_used_mb"], s["ram_total_mb"], s["swap_used_mb"]) == (2448, 7620, 0)
    assert s["cpus"][:4] == [
        {"load_pct": 12, "freq_mhz": 1420},
        {"load_pct": 8, "freq_mhz": 1420},
        {"load_pct": 5, "freq_mhz": 1420},
        {"load_pct": 9, "freq_mhz": 1420},
    ]
    assert s["cpus"][4:] == [None, None] and len(s["cpus"]) == 6
    assert s["gpu_load_pct"] == 45 and s["gpu_freq_mhz"] is None and s["emc_load_pct"] == 0
    assert s["temps_c"] == {"CPU": 48.5, "GPU": 47.9, "tj": 49.5}
    assert s["rails_mw"] == {"VDD_IN": (5102, 5102), "VDD_CPU_GPU_CV": (1234, 1234), "VDD_SOC": (1456, 1456)}
    assert (s["total_power_mw"], s["total_power_rail"]) == (5102, "VDD_IN")


def test_orin_jetpack6_gpc_frequency_and_many_sensors():
    s = parse_tegrastats(lines("orin-nano-jp6.txt")[1])
    assert s["gpu_load_pct"] == 75 and s["gpu_freq_mhz"] == 624 and s["emc_load_pct"] == 12
    assert s["rails_mw"]["VDD_IN"] == (6102, 5602)  # current / average
    assert s["temps_c"]["gpu"] == 51.3 and s["temps_c"]["soc1"] == 47.5 and max_temperature(s["temps_c"]) == 52.0
    assert "APE" not in s["rails_mw"] and "NVENC" not in s["rails_mw"]


def test_xavier_nx_jetpack5_gpu_frequency_and_pmic_placeholder_ignored():
    s = parse_tegrastats(lines("xavier-nx-jp5.txt")[0])
    assert s["gpu_load_pct"] == 0 and s["gpu_freq_mhz"] == 1300
    assert s["cpus"][0] == {"load_pct": 4, "freq_mhz": 1190} and s["cpus"][-1] is None
    assert s["total_power_mw"] == 4213 and s["total_power_rail"] == "VDD_IN"
    assert s["temps_c"]["PMIC"] == 50 and max_temperature(s["temps_c"]) == 33.0


def test_nano_jetpack4_pom_rails_without_units():
    s = parse_tegrastats(lines("nano-jp4.txt")[0])
    assert s["rails_mw"] == {"POM_5V_IN": (3255, 3255), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (499, 499)}
    assert (s["total_power_mw"], s["total_power_rail"]) == (3255, "POM_5V_IN")
    assert s["gpu_freq_mhz"] == 76 and len(s["cpus"]) == 4
    assert "IRAM" not in s["rails_mw"] and "RAM" not in s["rails_mw"]
    assert max_temperature(s["temps_c"]) == 41.0  # PMIC@100C is a placeholder, not a reading


def test_agx_orin_without_input_rail_sums_the_rails_and_skips_offline_sensors():
    s = parse_tegrastats(lines("agx-orin-jp5.txt")[0])
    assert s["gpu_freq_mhz"] == 305 and len(s["cpus"]) == 12 and s["cpus"].count(None) == 8
    assert s["total_power_rail"] == "sum" and s["total_power_mw"] == 2400 + 400 + 2619 + 402
    assert s["temps_c"]["GPU"] == -256 and max_temperature(s["temps_c"]) == 43.718


def test_malformed_lines_are_clear_errors():
    with pytest.raises(GatekitError, match="not a tegrastats line"):
        parse_tegrastats(lines("malformed.txt")[0])
    with pytest.raises(GatekitError, match="not a tegrastats line"):
        parse_tegrastats("")
    with pytest.raises(GatekitError, match="malformed CPU entry 'x%@1'"):
        parse_tegrastats("RAM 1/2MB CPU [x%@1,2%@3]")
    partial = parse_tegrastats("RAM 100/200MB SWAP")  # recognised fields only; the rest stay empty
    assert partial["ram_used_mb"] == 100 and partial["gpu_load_pct"] is None and partial["rails_mw"] == {}
    assert partial["total_power_mw"] is None


def test_nvpmodel():
    assert parse_nvpmodel((JETSON / "nvpmodel-maxn.txt").read_text()) == {"mode_name": "MAXN", "mode_id": 0}
    assert parse_nvpmodel((JETSON / "nvpmodel-15w.txt").read_text()) == {"mode_name": "15W", "mode_id": 2}
    with pytest.raises(GatekitError, match="NV Power Mode"):
        parse_nvpmodel("NVPM ERROR: failed to read PARAM CPU_ONLINE")


def test_jetson_clocks_locked_and_not():
    locked = parse_jetson_clocks((JETSON / "jetson_clocks-locked.txt").read_text())
    assert locked["locked"] is True and locked["reasons"] == [] and len(locked["cpus"]) == 6
    assert locked["gpu"] == {"minfreq": 624750000, "maxfreq": 624750000, "currentfreq": 624750000}
    assert locked["emc"]["freqoverride"] == 1
    loose = parse_jetson_clocks((JETSON / "jetson_clocks-unlocked.txt").read_text())
    assert loose["locked"] is False
    assert any(r.startswith("cpu1 ") for r in loose["reasons"]) and any(r.startswith("GPU ") for r in loose["reasons"])
    assert not any(r.startswith(("cpu0 ", "cpu4 ", "cpu5 ")) for r in loose["reasons"])  # cpu0 fixed; 4, 5 offline
    with pytest.raises(GatekitError, match="jetson_clocks"):
        parse_jetson_clocks("Error: Run this script(/usr/bin/jetson_clocks) as a root user")


def test_l4t_release():
    r36 = parse_l4t_release((JETSON / "nv_tegra_release-r36.txt").read_text())
    assert r36 == {"l4t": "36.3.0", "major": 36, "jetpack_major": 6, "board": "generic"}
    r35 = parse_l4t_release((JETSON / "nv_tegra_release-r35.txt").read_text())
    assert (r35["l4t"], r35["major"], r35["jetpack_major"]) == ("35.4.1", 35, 5)
    with pytest.raises(GatekitError, match="nv_tegra_release"):
        parse_l4t_release("Ubuntu 22.04.4 LTS")


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """A directory put first on PATH for fake Jetson / NVIDIA binaries."""
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


def _fake_tegrastats(fake_bin: Path, sample_file: Path, tmp_path: Path) -> Path:
    """Prints each line of sample_file every --interval ms, then stays up until terminated; records its
    arguments and pid."""
    log = tmp_path / "tegrastats.args"
    _executable(
        fake_bin / "tegrastats",
        f"""#!/bin/sh
echo "$$ $*" > "{log}"
[ "$1" = "--interval" ] || exit 3
delay=$(awk "BEGIN {{ print $2 / 1000 }}")
while IFS= read -r line; do
    echo "$line"
    sleep "$delay"
done < "{sample_file}"
exec sleep 60
""",
    )
    return log


def _wait_for(cond, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


def test_tegrastats_monitor_summarises_a_fake_tegrastats(fake_bin, tmp_path):
    samples = tmp_path / "samples.txt"
    # the first line comes before the block starts and is dropped
    samples.write_text("\n".join(lines("nano-jp4.txt") + lines("orin-nano-jp6.txt") + lines("malformed.txt")) + "\n")
    log = _fake_tegrastats(fake_bin, samples, tmp_path)
    with TegrastatsMonitor(interval_ms=20) as mon:
        assert mon.active and mon.warmup_lines >= 1
        assert _wait_for(lambda: len(mon.samples) == 3 and mon.malformed == 1)
    pid, args = log.read_text().split(" ", 1)
    assert args.strip() == "--interval 20"
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(int(pid), 0)
    s = mon.summary
    assert mon.warmup_lines == 1 and s["samples"] == 3 and s["malformed_lines"] == 1 and s["interval_ms"] == 20
    assert s["mean_power_mw"] == pytest.approx((5102 + 6102 + 7102) / 3) and s["max_power_mw"] == 7102
    assert s["power_rail"] == "VDD_IN"
    assert s["mean_gpu_load_pct"] == pytest.approx((45 + 75 + 90) / 3)
    assert s["max_temp_c"] == 54.1
    assert s["mean_rails_mw"]["VDD_SOC"] == pytest.approx((1456 + 1556 + 1656) / 3)


def test_tegrastats_monitor_is_a_no_op_without_tegrastats(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no tegrastats
    with TegrastatsMonitor() as mon:
        assert not mon.active
    assert mon.summary is None and mon.stop() is None


def _identity_onnx(tmp_path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["features"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "dense.onnx"
    onnx.save(model, path)
    manifest = {
        "graph": "dense",
        "format": "onnx",
        "files": {"onnx": path.name},
        "precision": "fp32",
        "budget": None,
        "macs": {"ratio_to_dense": 1.0},
    }
    (tmp_path / "dense.onnx.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("with_tegrastats", [True, False])
def test_bench_one_records_power_while_timing(fake_bin, tmp_path, with_tegrastats):
    pytest.importorskip("onnxruntime")
    from gatekit.artifacts import open_artifact
    from gatekit.bench.protocol import Protocol
    from gatekit.bench.run import bench_one

    artifact = open_artifact(_identity_onnx(tmp_path))
    if with_tegrastats:
        samples = tmp_path / "samples.txt"
        samples.write_text("\n".join(lines("xavier-nx-jp5.txt") * 5) + "\n")
        _fake_tegrastats(fake_bin, samples, tmp_path)
    inputs = np.random.default_rng(0).standard_normal((4, 3, 4, 4)).astype(np.float32)
    protocol = Protocol(warmup_runs=2, warmup_seconds=0.0, min_runs=20, min_seconds=0.3, floor_runs=5)
    rec = bench_one(artifact, "ort", 1, 1, protocol, inputs, "random", describe_machine={"cpu": "test"})
    assert rec["stats"]["runs"] >= 5
    if with_tegrastats:
        p = rec["power"]
        assert p["source"] == "tegrastats" and p["samples"] >= 1
        assert p["mean_power_mw"] == 4213 and p["power_rail"] == "VDD_IN" and p["max_temp_c"] == 33.0
    else:
        assert rec["power"] is None


def test_jetson_info_reads_a_device_tree_and_the_tools(fake_bin, tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text((JETSON / "nv_tegra_release-r36.txt").read_text())
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    _executable(fake_bin / "nvpmodel", f'#!/bin/sh\n[ "$1" = "-q" ] && cat "{JETSON / "nvpmodel-15w.txt"}"\n')
    _executable(
        fake_bin / "jetson_clocks", f'#!/bin/sh\n[ "$1" = "--show" ] && cat "{JETSON / "jetson_clocks-unlocked.txt"}"\n'
    )
    info = jetson_info(root)
    assert info["board"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info["l4t"]["l4t"] == "36.3.0"
    assert info["power_mode"] == {"mode_name": "15W", "mode_id": 2}
    assert info["clocks"]["locked"] is False and info["clocks"]["reasons"]
    # jetson_clocks refusing (not root): the rest stays
    _executable(fake_bin / "jetson_clocks", '#!/bin/sh\necho "Error: Run this script as a root user" >&2\nexit 1\n')
    assert jetson_info(root)["clocks"] is None and jetson_info(root)["power_mode"]["mode_id"] == 2


def test_jetson_info_is_none_off_a_jetson(tmp_path):
    assert jetson_info(tmp_path) is None


def test_gpu_info_from_nvidia_smi_and_machine_info_keys(fake_bin, tmp_path, monkeypatch):
    from gatekit.sysinfo import gpu_info, machine_info

    _executable(
        fake_bin / "nvidia-smi",
        '#!/bin/sh\n[ "$1" = "--query-gpu=name,driver_version" ] || exit 9\n'
        'echo "NVIDIA H100 80GB HBM3, 550.54.15"\necho "NVIDIA H100 80GB HBM3, 550.54.15"\n',
    )
    assert gpu_info() == {
        "name": "NVIDIA H100 80GB HBM3",
        "driver": "550.54.15",
        "count": 2,
        "names": ["NVIDIA H100 80GB HBM3"] * 2,
    }
    info = machine_info()
    assert info["gpu"]["name"] == "NVIDIA H100 80GB HBM3" and "jetson" in info
    _executable(fake_bin / "nvidia-smi", "#!/bin/sh\necho 'NVIDIA-SMI has failed' ; exit 9\n")
    assert gpu_info() is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpu_info() is None
