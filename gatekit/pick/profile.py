"""`gatekit profile`: a per-device latency table (LUT) of a gated ResNet's pieces, and its check.

On the target device, with the protocol of `gatekit bench`, it times the stem, the head and every block
at every inner width a static graph can have (multiples of `round_to`), each as its own ONNX graph
(gatekit.pick.synth), on one runtime at one thread count. It then measures a few whole networks
(uniform fractions of every block's width) to calibrate how the sum of the table's entries maps to a
whole network's p50 and p90 (a scale and a fixed overhead: one call instead of ten, caches warm across
pieces), plus ten random configurations, and finally predicts held-out random width configurations that
the table and calibration never saw and measures them, reporting the share predicted within +-10%.
Whole networks are measured in interleaved repeats (medians), calibration and held-out alike.

Whole networks run on real test images; isolated pieces run on post-ReLU-like random activations of
the right shape (the latency of a dense float32 conv does not depend on the values). Torch-free.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gatekit import native_ops
from gatekit.artifacts import FORMATS
from gatekit.bench.protocol import Protocol, measure
from gatekit.errors import GatekitError
from gatekit.models.arch import Architecture, BlockShape
from gatekit.pick import predict as predictor
from gatekit.pick import synth
from gatekit.runtimes import get_backend
from gatekit.sysinfo import machine_info

SCHEMA = "gatekit.lut/1"
PROFILE_PROTOCOL = Protocol(warmup_runs=20, warmup_seconds=0.1, min_runs=400, min_seconds=1.5, floor_runs=50)
CHECK_PROTOCOL = Protocol(warmup_runs=50, warmup_seconds=0.2, min_runs=1000, min_seconds=1.0, floor_runs=50)
CHECK_REPEATS = 3  # whole networks: interleaved repeats, medians (a burst of noise hits one repeat, not the figure)
CALIBRATION_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)


@dataclass
class ProfileOptions:
    runtime: str = "ort"
    threads: int | None = 1
    round_to: int = 16
    precision: str = "fp32"
    device: str | None = None
    protocol: Protocol = PROFILE_PROTOCOL
    check_protocol: Protocol = CHECK_PROTOCOL
    check: int = 20  # held-out whole networks to predict and measure
    repeats: int = CHECK_REPEATS
    seed: int = 0
    calibration: tuple[float, ...] = field(default=CALIBRATION_FRACTIONS)
    calibration_random: int = 10  # random configurations added to the uniform ones for the fit
    # also time the native gated-block op at active widths (predicts native dynamic graphs per input; with precision
    # int8 the int8 op, for int8 dynamic graphs); None: when gatekit's op library (with the int8 ops for int8) is
    # built for the runtime
    native: bool | None = None
    native_steps: int = 8  # active widths per block: planes * k / native_steps, k = 0..native_steps
    # random channel sets of each active width that the native op's timings rotate through per input (as a
    # deployed dynamic graph's inputs do: the weights each call reads change); 1 = one fixed set
    native_masks: int = 2


class _Runner:
    """Loads ONNX graphs on one runtime (TensorRT: builds an engine first) and times them."""

    def __init__(self, opts: ProfileOptions, workdir: Path, extensions: tuple[str, ...] = ()):
        self.opts, self.workdir, self.backend, self.info = opts, workdir, get_backend(opts.runtime), None
        self.n, self.extensions = 0, extensions

    def session(self, model):
        self.n += 1
        path = self.workdir / f"g{self.n}.onnx"
        path.write_bytes(model.SerializeToString())
        native = any(n.domain == synth.NATIVE_DOMAIN for n in model.graph.node)
        if self.opts.precision == "int8" and not native:  # a native int8 graph holds the int8 ops already
            path = self._quantized(path, model)
        if self.backend.name == "tensorrt":
            from gatekit.runtimes.tensorrt_build import build_engine  # torch-free: onnx + tensorrt only

            engine = path.with_suffix(FORMATS["tensorrt"].suffix)
            build_engine(path, engine, precision=self.opts.precision)
            path = engine
        s = self.backend.load(
            path,
            threads=self.opts.threads,
            precision=self.opts.precision,
            device=self.opts.device,
            extensions=self.extensions if native else (),
        )
        self.info = self.info or s.info.to_dict()
        return s

    def _quantized(self, path: Path, model) -> Path:
        """The graph quantized as `gatekit export --precision int8` quantizes (QDQ for ORT, NNCF for OpenVINO),
        calibrated on random post-ReLU-like activations (latency does not depend on the scales)."""
        from gatekit.runtimes import quantize

        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        calib = _activations(shape, 8, np.random.default_rng(self.n))
        if self.backend.name == "ort":
            out = path.with_name(path.stem + "-int8.onnx")
            quantize.quantize_onnx(path, out, calib, [])
            return out
        if self.backend.name == "openvino":
            import openvino as ov

            out = path.with_suffix(".xml")
            ov.save_model(quantize.quantize_openvino(ov.convert_model(str(path)), calib, [])[0], str(out))
            return out
        raise GatekitError(f"an int8 LUT is built for ort or openvino, not {self.backend.name}")

    def time(self, model, batches: list[np.ndarray], protocol: Protocol) -> dict:
        with self.session(model) as s:
            return measure(s, batches, protocol).stats()

    def time_interleaved(
        self, models: list, batches: list[np.ndarray], protocol: Protocol, repeats: int, tick
    ) -> list[dict]:
        """Times every model `repeats` times, round-robin, and keeps per model the median p50 and p90 of
        its repeats (with their spread), so that a burst of machine noise does not decide a figure."""
        sessions = [self.session(m) for m in models]
        try:
            runs: list[list[dict]] = [[] for _ in models]
            for _ in range(max(1, repeats)):
                for i, s in enumerate(sessions):
                    runs[i].append(measure(s, batches, protocol).stats())
            out = []
            for stats in runs:
                merged = dict(stats[0])
                for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
                    merged[k] = float(np.median([x[k] for x in stats]))
                merged["repeats"] = len(stats)
                merged["p50_ms_repeats"] = [x["p50_ms"] for x in stats]
                merged["p90_ms_repeats"] = [x["p90_ms"] for x in stats]
                out.append(merged)
                tick("whole network")
            return out
        finally:
            for s in sessions:
                s.close()


def real_inputs(dataset: str, data_dir: str | None, size: int, count: int = 64) -> np.ndarray:
    """The first `count` real test images of `dataset`, resized to `size` and normalised: whole networks' inputs."""
    from gatekit.data import load_dataset, normalization
    from gatekit.data.arrays import normalize_images

    data = load_dataset(dataset, "test", data_dir, limit=count, image_size=size)
    return normalize_images(data.images, *normalization(dataset))


def _activations(shape: list[int], count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Post-ReLU-like activations: about half zeros, the rest positive."""
    return [np.maximum(rng.standard_normal(shape), 0).astype(np.float32) for _ in range(count)]


def calibration_configs(arch: Architecture, round_to: int, fractions=CALIBRATION_FRACTIONS) -> list[list[int]]:
    """Uniform fractions of every block's planes, rounded up to the grid."""
    out = []
    for f in fractions:
        widths = [_on_grid(b, b.planes * f, round_to) for b in arch.blocks()]
        if widths not in out:
            out.append(widths)
    return out


def held_out_configs(
    arch: Architecture, round_to: int, count: int, seed: int, exclude: list[list[int]]
) -> list[list[int]]:
    """`count` random static width configurations: a global fraction U(0.1, 1), jittered per block by
    U(0.6, 1.4), rounded up to the grid; none equal to a calibration configuration or to each other."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = []
    tries = 0
    while len(out) < count and tries < 100 * count:
        tries += 1
        f = rng.uniform(0.1, 1.0)
        widths = [_on_grid(b, b.planes * min(1.0, f * rng.uniform(0.6, 1.4)), round_to) for b in arch.blocks()]
        if widths not in out and widths not in exclude:
            out.append(widths)
    return out


def _on_grid(b: BlockShape, width: float, round_to: int) -> int:
    grid = b.grid(round_to)
    return next((g for g in grid if g >= width - 1e-9), grid[-1])


def profile(arch: Architecture, opts: ProfileOptions, images: np.ndarray, progress=None) -> dict:
    """Builds and checks the LUT. `images`: real, normalised NCHW float32 inputs of arch.input_size
    (at least one). `progress(done, total, what)` is called after every timed graph."""
    if images.ndim != 4 or images.shape[1:] != (3, arch.input_size, arch.input_size):
        raise GatekitError(f"profile inputs must be N x 3 x {arch.input_size} x {arch.input_size}, got {images.shape}")
    rng = np.random.default_rng(opts.seed)
    blocks = arch.blocks()
    calib = calibration_configs(arch, opts.round_to, opts.calibration)
    calib += held_out_configs(arch, opts.round_to, opts.calibration_random, opts.seed + 1000, calib)
    held = held_out_configs(arch, opts.round_to, opts.check, opts.seed + 1, calib)
    total = 2 + sum(len(b.grid(opts.round_to)) for b in blocks) + len(calib) + len(held)
    done = 0
    inputs = [images[i : i + 1] for i in range(min(len(images), 64))]
    started = time.perf_counter()

    def tick(what):
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, what)

    library = _native_library(opts)
    if library:
        native_calib = [[round(b.planes * f) for b in blocks] for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
        native_calib += held_out_configs(arch, 1, 5, opts.seed + 2000, native_calib)
        native_held = held_out_configs(arch, 1, max(4, opts.check // 2), opts.seed + 3000, native_calib)
        total += sum(opts.native_steps + 1 for _ in blocks) + len(native_calib) + len(native_held)
    with tempfile.TemporaryDirectory(prefix="gatekit-profile-") as tmp:
        run = _Runner(opts, Path(tmp), (str(library),) if library else ())
        stem = run.time(synth.piece(arch, "stem"), inputs, opts.protocol)
        tick("stem")
        head = run.time(synth.piece(arch, "head"), _activations(synth.input_shape(arch, "head"), 4, rng), opts.protocol)
        tick("head")
        table = []
        for b in blocks:
            acts = _activations(synth.input_shape(arch, "block", b.index), 4, rng)
            entry = {
                "index": b.index,
                "in_channels": b.in_channels,
                "planes": b.planes,
                "stride": b.stride,
                "size_in": b.size_in,
                "widths": [],
                "p50_ms": [],
                "p90_ms": [],
                "macs": [],
            }
            for w in b.grid(opts.round_to):
                stats = run.time(synth.piece(arch, "block", w, b.index, seed=b.index), acts, opts.protocol)
                entry["widths"].append(w)
                entry["p50_ms"].append(stats["p50_ms"])
                entry["p90_ms"].append(stats["p90_ms"])
                entry["macs"].append(b.macs(w))
                tick(f"block {b.index} width {w}")
            table.append(entry)
        lut = {
            "schema": SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "runtime": run.info,
            "threads": opts.threads,
            "batch": 1,
            "precision": opts.precision,
            "round_to": opts.round_to,
            "arch": arch.to_dict(),
            "protocol": opts.protocol.to_dict(),
            "check_protocol": opts.check_protocol.to_dict(),
            "stem": stem,
            "head": head,
            "blocks": table,
        }
        # calibration and held-out networks are measured together, interleaved (medians of `repeats`)
        nets = [synth.network(arch, w, seed=i) for i, w in enumerate(calib + held)]
        measured = run.time_interleaved(nets, inputs, opts.check_protocol, opts.repeats, tick)
        lut["check_repeats"] = opts.repeats
        lut["calibration"] = predictor.calibrate(lut, calib, measured[: len(calib)])
        lut["validation"] = predictor.summarise(
            [predictor.compare(lut, w, m) for w, m in zip(held, measured[len(calib) :])]
        )
        if library:
            lut["native"] = _native_table(lut, arch, opts, run, rng, tick, native_calib, native_held, inputs)
            lut["native"]["library"] = str(library)
            lut["native"]["isa"] = native_ops.loaded_isa(library)  # the kernel path its timings ran
    lut["seconds"] = round(time.perf_counter() - started, 1)
    return lut


NATIVE_PRECISIONS = ("fp32", "int8")  # the native op's precisions: the fp32 op and the int8 op
INT8_OPS = ("GatedBlockWithGateInt8", "GatedBlockWithGateAndShortcutInt8")  # what synth's int8 native blocks use


def _native_library(opts: ProfileOptions):
    """The op library to time the native gated-block op with (precision int8: the int8 op), or None (opts.native
    False, or none built)."""
    if opts.native and opts.precision not in NATIVE_PRECISIONS:
        raise GatekitError(
            f"the native op runs fp32 or int8, not {opts.precision}: profile it with --precision fp32 or int8"
        )
    if opts.native is False or opts.runtime not in ("ort", "openvino") or opts.precision not in NATIVE_PRECISIONS:
        return None
    lib, refused = native_ops.find_library(opts.runtime)
    if lib is None and opts.native:
        why = f": {refused}" if refused.state != "missing" else ": run `gatekit ops build`"
        raise GatekitError(f"--native needs gatekit's op library for {opts.runtime}{why}")
    if lib is None:
        native_ops.warn_refused(refused)
    if lib is not None and opts.precision == "int8":
        from gatekit.runtimes.native_probe import library_runs

        if not library_runs(opts.runtime, lib, INT8_OPS):
            if opts.native:
                raise GatekitError(
                    f"--native --precision int8 times gatekit's int8 ops, and the op library for "
                    f"{opts.runtime} ({lib}) has none: rebuild it with `gatekit ops build`"
                )
            return None
    return lib


def _native_table(
    lut: dict, arch: Architecture, opts: ProfileOptions, run: _Runner, rng, tick, calib, held, inputs
) -> dict:
    """Every block as the native op (its gate included; precision int8: the int8 op) at active widths 0..planes;
    calibrated and checked on whole native networks at fixed per-block active widths, like the static table. With
    native_masks > 1 each input of a piece or network runs one of that many random channel sets of those widths
    (synth's selector), so the timings include the cache misses of weights that change call to call."""
    int8 = opts.precision == "int8"
    blocks = []
    for b in arch.blocks():
        acts = _activations(synth.input_shape(arch, "block", b.index), max(4, 2 * opts.native_masks), rng)
        if opts.native_masks > 1:
            acts = synth.selector_activations(acts, rng)
        entry = {"index": b.index, "planes": b.planes, "widths": [], "p50_ms": [], "p90_ms": []}
        for k in sorted({round(b.planes * i / opts.native_steps) for i in range(opts.native_steps + 1)}):
            stats = run.time(
                synth.piece(arch, "native", k, b.index, seed=b.index, masks=opts.native_masks, int8=int8),
                acts,
                opts.protocol,
            )
            entry["widths"].append(k)
            entry["p50_ms"].append(stats["p50_ms"])
            entry["p90_ms"].append(stats["p90_ms"])
            tick(f"native block {b.index} active {k}")
        blocks.append(entry)
    table = {"blocks": blocks, "steps": opts.native_steps, "masks": opts.native_masks, "precision": opts.precision}
    nets = _native_networks(arch, calib + held, opts.native_masks, int8)
    measured = run.time_interleaved(nets, inputs, opts.check_protocol, opts.repeats, tick)
    view = predictor.native_view(dict(lut, native=table))
    table["calibration"] = view["calibration"] = predictor.calibrate(view, calib, measured[: len(calib)])
    table["validation"] = predictor.summarise(
        [predictor.compare(view, w, m) for w, m in zip(held, measured[len(calib) :])]
    )
    return table


def _native_networks(arch: Architecture, configs: list[list[int]], masks: int, int8: bool = False) -> list:
    """The whole native networks the native table is calibrated and checked on, one per width configuration
    (the i-th seeded i): native_drift re-times the same graphs."""
    return [synth.network(arch, w, seed=i, native=True, masks=masks, int8=int8) for i, w in enumerate(configs)]


def native_drift(lut: dict, arch: Architecture, opts: ProfileOptions, images: np.ndarray, count: int = 3) -> dict:
    """The LUT's first `count` native calibration networks re-timed now (the same graphs, protocol and
    interleaved repeats), over their p50 and p90 in the LUT: whether the table's own reference networks still
    time as they did when it was built. A ratio away from 1 says the device or its load changed (a shared
    host's other tenants, a clock change); it is a record, not a correction: on a shared 2-core VM these
    networks moved by 5-9% while the graphs the table predicted did not."""
    native = lut.get("native")
    if not native or "calibration" not in native:
        raise GatekitError("the LUT has no calibrated native op table")
    configs = native["calibration"]["configs"][:count]
    inputs = [images[i : i + 1] for i in range(min(len(images), 64))]
    nets = _native_networks(
        arch, [c["widths"] for c in configs], native.get("masks", 1), predictor.native_precision(lut) == "int8"
    )
    with tempfile.TemporaryDirectory(prefix="gatekit-drift-") as tmp:
        run = _Runner(opts, Path(tmp), (str(native["library"]),))
        now = run.time_interleaved(nets, inputs, opts.check_protocol, opts.repeats, lambda _: None)
    out = {"networks": len(configs)}
    for k in ("p50_ms", "p90_ms"):
        out[f"{k[:3]}_now_over_lut"] = float(np.median([m[k] / c["measured"][k] for m, c in zip(now, configs)]))
    return out


def load_lut(path: str | Path) -> dict:
    """A LUT written by `gatekit profile`; GatekitError (one line) when missing or not one."""
    p = Path(path)
    if not p.is_file():
        raise GatekitError(f"no such LUT: {p}")
    try:
        lut = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GatekitError(f"{p} is not a gatekit LUT (unreadable JSON: {e})") from None
    if not isinstance(lut, dict) or lut.get("schema") != SCHEMA or "calibration" not in lut:
        raise GatekitError(f"{p} is not a gatekit LUT (schema {SCHEMA})")
    _check_lut(lut, p)
    return lut


def _check_lut(lut: dict, p: Path) -> None:
    """The fields planning reads, each with its type: one line naming the LUT and the field otherwise."""

    def fail(field: str, what: str):
        raise GatekitError(f"{p}: LUT field {field!r} {what}")

    number = (int, float)
    for key in ("runtime", "arch", "stem", "head", "calibration"):
        if not isinstance(lut.get(key), dict):
            fail(key, "is missing or not a table")
    if not isinstance(lut["runtime"].get("name"), str):
        fail("runtime.name", "is missing or not a name")
    for key in ("threads", "round_to"):
        if not isinstance(lut.get(key), int) or isinstance(lut.get(key), bool) or lut[key] < 1:
            fail(key, "is missing or not a positive integer")
    for key in ("stem", "head"):
        if not isinstance(lut[key].get("p50_ms"), number):
            fail(f"{key}.p50_ms", "is missing or not a number")
    fit = lut["calibration"].get("fit")
    if not isinstance(fit, dict) or not all(
        isinstance(fit.get(k), dict)
        and isinstance(fit[k].get("scale"), number)
        and isinstance(fit[k].get("offset_ms"), number)
        for k in ("p50_ms", "p90_ms")
    ):
        fail("calibration.fit", "is missing or lacks scale and offset_ms for p50_ms and p90_ms")
    blocks = lut.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        fail("blocks", "is missing or empty")
    for i, b in enumerate(blocks):
        if (
            not isinstance(b, dict)
            or not all(isinstance(b.get(k), list) and b[k] for k in ("widths", "p50_ms", "p90_ms"))
            or len(b["widths"]) != len(b["p50_ms"])
            or not isinstance(b.get("planes"), int)
        ):
            fail(f"blocks[{i}]", "lacks planes, or widths with a p50_ms and p90_ms per width")


def plot_validation(lut: dict, path: str | Path) -> None:
    """Predicted against measured p50 and p90 of the held-out networks, with the +-10% band (PNG)."""
    from gatekit.plotting import new_figure, save_png

    fig = new_figure(figsize=(6.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    rows = lut["validation"]["configs"]
    hi = 0.0
    for p, marker in (("p50", "o"), ("p90", "^")):
        x = [r[f"measured_{p}_ms"] for r in rows]
        y = [r[f"predicted_{p}_ms"] for r in rows]
        share = lut["validation"][f"within_tolerance_{p}"]
        ax.scatter(x, y, marker=marker, alpha=0.75, label=f"{p}: {100 * share:.0f}% within +-10%")
        hi = max([hi, *x, *y])
    line = np.linspace(0, hi * 1.05, 10)
    ax.plot(line, line, color="black", lw=1, label="exact")
    ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.2, label="+-10%")
    rt = lut["runtime"]
    ax.set_title(
        f"{rt['name']} {rt['version']}, {lut['threads']}T, {lut['arch']['arch']} x{lut['arch']['width']:g} "
        f"@{lut['arch']['input_size']}px\n{lut['machine']['cpu']}",
        fontsize=8,
    )
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    save_png(fig, path)
