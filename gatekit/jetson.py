"""Jetson metadata, torch-free: tegrastats lines (power, GPU load, temperatures), the nvpmodel power mode,
whether `jetson_clocks` has locked the clocks, and the L4T release. Everything parses recorded text, so it
is tested off the device; `jetson_info()` and `TegrastatsMonitor` read the live device when there is one
and return None elsewhere.

    with TegrastatsMonitor(interval_ms=100) as mon:
        run_the_benchmark()
    mon.summary   # {"samples": 83, "mean_power_mw": 5102.4, "max_power_mw": 6011, ...} or None off a Jetson
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

from gatekit.errors import GatekitError

_TIMESTAMP = re.compile(r"^\s*\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2}\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CPU_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%(?:@(\[[\d,]*\]|\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"(?<![\w%])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL_VALUE = re.compile(r"^(\d+)(?:mW)?/(\d+)(?:mW)?$")
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # the board's input rail: Orin / Xavier NX, then Nano / TX
IGNORED_TEMPS = ("PMIC",)  # a fixed 100C placeholder on several modules, not a measurement
INVALID_TEMP_C = -40.0  # an offline sensor reads -256C


def parse_tegrastats(line: str) -> dict:
    """One tegrastats line (JetPack 4 to 6 formats, with or without the timestamp prefix) as a dict:
    ram_used_mb / ram_total_mb, cpus [{"load_pct", "freq_mhz"} or None for an offline core], gpu_load_pct,
    gpu_freq_mhz, temps_c {sensor: C}, rails_mw {rail: (current, average)}, total_power_mw and
    total_power_rail. Fields a line lacks are None (or empty); a line with none of them is an error."""
    text = _TIMESTAMP.sub("", line.strip())
    out: dict = {
        "ram_used_mb": None,
        "ram_total_mb": None,
        "swap_used_mb": None,
        "cpus": [],
        "gpu_load_pct": None,
        "gpu_freq_mhz": None,
        "emc_load_pct": None,
        "temps_c": {},
        "rails_mw": {},
        "total_power_mw": None,
        "total_power_rail": None,
    }
    if m := _RAM.search(text):
        out["ram_used_mb"], out["ram_total_mb"] = int(m[1]), int(m[2])
    if m := _SWAP.search(text):
        out["swap_used_mb"] = int(m[1])
    if m := _CPU.search(text):
        for item in (x.strip() for x in m[1].split(",")):
            core = _CPU_CORE.match(item)
            if item == "off":
                out["cpus"].append(None)
            elif core:
                out["cpus"].append({"load_pct": int(core[1]), "freq_mhz": int(core[2]) if core[2] else None})
            else:
                raise GatekitError(f"malformed CPU entry {item!r} in tegrastats line: {line.strip()[:120]!r}")
    if m := _GPU.search(text):
        out["gpu_load_pct"] = int(m[1])
        if m[2]:
            freqs = [int(f) for f in m[2].strip("[]").split(",") if f]  # Orin: one frequency per GPC
            out["gpu_freq_mhz"] = max(freqs) if freqs else None
    if m := _EMC.search(text):
        out["emc_load_pct"] = int(m[1])
    for name, value in _TEMP.findall(text):
        out["temps_c"][name] = float(value)
    tokens = text.split()
    for name, value in zip(tokens, tokens[1:]):
        rail = _RAIL_VALUE.match(value)
        if rail and re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and name not in ("RAM", "SWAP"):
            out["rails_mw"][name] = (int(rail[1]), int(rail[2]))
    for rail in TOTAL_RAILS:
        if rail in out["rails_mw"]:
            out["total_power_mw"], out["total_power_rail"] = out["rails_mw"][rail][0], rail
            break
    else:
        if out["rails_mw"]:  # AGX Xavier / AGX Orin have no input rail: the sum of the module's rails
            out["total_power_mw"] = sum(v[0] for v in out["rails_mw"].values())
            out["total_power_rail"] = "sum"
    if out["ram_total_mb"] is None and not out["cpus"] and out["gpu_load_pct"] is None and not out["rails_mw"]:
        raise GatekitError(f"not a tegrastats line (no RAM, CPU, GR3D_FREQ or power rail): {line.strip()[:120]!r}")
    return out


def max_temperature(temps_c: dict) -> float | None:
    """The hottest real sensor: the PMIC placeholder and offline sensors (-256C) are left out."""
    values = [v for k, v in temps_c.items() if k not in IGNORED_TEMPS and v > INVALID_TEMP_C]
    return max(values) if values else None


def summarize(samples: list[dict], interval_ms: int | None = None, malformed: int = 0) -> dict | None:
    """Mean and max total power (mW), mean GPU load, max temperature and the sample count."""
    if not samples:
        return None
    power = [s["total_power_mw"] for s in samples if s["total_power_mw"] is not None]
    gpu = [s["gpu_load_pct"] for s in samples if s["gpu_load_pct"] is not None]
    temps = [t for t in (max_temperature(s["temps_c"]) for s in samples) if t is not None]
    rails = sorted({r for s in samples for r in s["rails_mw"]})
    return {
        "source": "tegrastats",
        "samples": len(samples),
        "malformed_lines": malformed,
        "interval_ms": interval_ms,
        "mean_power_mw": sum(power) / len(power) if power else None,
        "max_power_mw": max(power) if power else None,
        "power_rail": samples[-1]["total_power_rail"],
        "mean_gpu_load_pct": sum(gpu) / len(gpu) if gpu else None,
        "max_temp_c": max(temps) if temps else None,
        "mean_rails_mw": {
            r: sum(s["rails_mw"][r][0] for s in samples if r in s["rails_mw"])
            / sum(1 for s in samples if r in s["rails_mw"])
            for r in rails
        },
    }


class TegrastatsMonitor:
    """Runs `tegrastats --interval MS` for the duration of a `with` block and summarises what it printed
    (`.summary`, see `summarize`). Where there is no tegrastats binary it does nothing and `.summary` is
    None; a tegrastats that fails to start or prints nothing parsable gives None too.

    Entering waits for tegrastats's first line (at most a few intervals) and drops it, so the samples
    belong to the block; leaving waits for one more sample if the block was shorter than an interval."""

    def __init__(self, interval_ms: int = 100, binary: str = "tegrastats"):
        self.interval_ms = int(interval_ms)
        self.binary = binary
        self.samples: list[dict] = []
        self.malformed = 0
        self.warmup_lines = 0
        self.summary: dict | None = None
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._recording = False
        self._first_line = threading.Event()
        self._new_sample = threading.Event()

    @property
    def active(self) -> bool:
        return self._proc is not None

    def __enter__(self) -> TegrastatsMonitor:
        path = shutil.which(self.binary)
        if path is None:
            return self
        try:
            self._proc = subprocess.Popen(
                [path, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
        except OSError:
            self._proc = None
            return self
        self._reader = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._reader.start()
        self._first_line.wait(timeout=max(2.0, 3 * self.interval_ms / 1000))
        self._recording = True
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if not line.strip():
                continue
            if not self._recording:
                self.warmup_lines += 1
                self._first_line.set()
                continue
            try:
                self.samples.append(parse_tegrastats(line))
                self._new_sample.set()
            except GatekitError:
                self.malformed += 1

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> dict | None:
        if self._proc is not None:
            if not self.samples and self._proc.poll() is None:
                self._new_sample.wait(timeout=2 * self.interval_ms / 1000 + 0.5)
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=3)
            self._proc = None
            self.summary = summarize(self.samples, self.interval_ms, self.malformed)
        return self.summary


def parse_nvpmodel(text: str) -> dict:
    """`nvpmodel -q` output ("NV Power Mode: MAXN\\n0", optionally after "NV Fan Mode:quiet") ->
    {"mode_name", "mode_id"}."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    for k, line in enumerate(lines):
        m = re.match(r"NV Power Mode\s*:\s*(.+)$", line)
        if m:
            mode_id = next((int(x) for x in lines[k + 1 :] if re.fullmatch(r"\d+", x)), None)
            return {"mode_name": m[1].strip(), "mode_id": mode_id}
    raise GatekitError(f"no 'NV Power Mode' in nvpmodel output: {text.strip()[:120]!r}")


def _freqs(fields: str) -> dict:
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", fields)}


def parse_jetson_clocks(text: str) -> dict:
    """`jetson_clocks --show` output -> {"locked", "reasons", "cpus", "gpu", "emc"}. Locked means what
    `jetson_clocks` does: every online CPU at MinFreq == MaxFreq == CurrentFreq and the GPU at
    MinFreq == MaxFreq; "reasons" says what is not."""
    cpus, gpu, emc = {}, None, None
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"(cpu\d+):\s*(.*)$", line):
            f = _freqs(m[2])
            cpus[m[1]] = {
                "online": f.get("Online", "1") == "1",
                "governor": f.get("Governor"),
                **{k.lower(): int(f[k]) for k in ("MinFreq", "MaxFreq", "CurrentFreq") if k in f},
            }
        elif m := re.match(r"GPU\s+(MinFreq=.*)$", line):
            f = _freqs(m[1])
            gpu = {k.lower(): int(f[k]) for k in ("MinFreq", "MaxFreq", "CurrentFreq") if k in f}
        elif m := re.match(r"EMC\s+(MinFreq=.*)$", line):
            f = _freqs(m[1])
            emc = {k.lower(): int(f[k]) for k in ("MinFreq", "MaxFreq", "CurrentFreq", "FreqOverride") if k in f}
    if not cpus and gpu is None:
        raise GatekitError(f"no cpuN or GPU lines in jetson_clocks --show output: {text.strip()[:120]!r}")
    reasons = []
    for name, c in cpus.items():
        if not c["online"]:
            continue
        if not (c.get("minfreq") == c.get("maxfreq") == c.get("currentfreq")):
            reasons.append(
                f"{name} MinFreq/MaxFreq/CurrentFreq {c.get('minfreq')}/{c.get('maxfreq')}/{c.get('currentfreq')}"
            )
    if gpu is None:
        reasons.append("no GPU line")
    elif gpu.get("minfreq") != gpu.get("maxfreq"):
        reasons.append(f"GPU MinFreq {gpu.get('minfreq')} != MaxFreq {gpu.get('maxfreq')}")
    return {"locked": not reasons, "reasons": reasons, "cpus": cpus, "gpu": gpu, "emc": emc}


def parse_l4t_release(text: str) -> dict:
    """/etc/nv_tegra_release ("# R36 (release), REVISION: 3.0, GCID: ..., BOARD: generic, ...") ->
    {"l4t": "36.3.0", "major": 36, "jetpack_major": 6, "board": "generic"}."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not m:
        raise GatekitError(f"not an nv_tegra_release line: {text.strip()[:120]!r}")
    major = int(m[1])
    board = re.search(r"BOARD:\s*([^,]+)", text)
    return {
        "l4t": f"{major}.{int(m[2])}.{int(m[3] or 0)}",
        "major": major,
        "jetpack_major": {32: 4, 34: 5, 35: 5, 36: 6, 38: 7}.get(major),
        "board": board[1].strip() if board else None,
    }


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 and out.stdout.strip() else None


def jetson_info(root: str | os.PathLike = "/") -> dict | None:
    """The board, L4T release, nvpmodel power mode and clock lock of this Jetson; None off a Jetson.
    `nvpmodel -q` and `jetson_clocks --show` need their binaries (and jetson_clocks needs root): where
    they are missing or refuse, those fields are None."""
    root = Path(root)
    release_file, model_file = root / "etc/nv_tegra_release", root / "proc/device-tree/model"
    model = model_file.read_text(errors="replace").strip("\x00\n ") if model_file.is_file() else None
    release = release_file.read_text(errors="replace") if release_file.is_file() else None
    if release is None and not (model and "jetson" in model.lower()):
        return None
    info: dict = {"board": model, "l4t": None, "power_mode": None, "clocks": None}
    try:
        info["l4t"] = parse_l4t_release(release) if release else None
    except GatekitError:
        pass
    for key, argv, parse in (
        ("power_mode", ["nvpmodel", "-q"], parse_nvpmodel),
        ("clocks", ["jetson_clocks", "--show"], parse_jetson_clocks),
    ):
        text = _run(argv)
        if text:
            try:
                info[key] = parse(text)
            except GatekitError:
                pass
    if info["clocks"] is not None:  # the per-core table is long: a record keeps the verdict
        info["clocks"] = {"locked": info["clocks"]["locked"], "reasons": info["clocks"]["reasons"]}
    return info
