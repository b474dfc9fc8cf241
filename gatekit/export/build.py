"""The deploy modules of one export, built once each, and which dynamic form a format gets.

A dense, static or hybrid graph has one form. A dynamic graph has several: in standard ops ("conv", "matmul"), as
gatekit's native op ("native", with a standard-ops fallback beside it), and in int8 ("native": gatekit's int8
ops, "qdq": standard ops); --dynamic-form chooses, and "auto" picks per format from the op library built here.
"""

from __future__ import annotations

import torch

from gatekit import native_ops
from gatekit.artifacts import FORMATS
from gatekit.errors import GatekitError
from gatekit.export.calibration import GateUsage, Int8Calibration
from gatekit.export.graphs import NATIVE_GATES, NATIVE_SHORTCUTS, GraphSpec, build_graph
from gatekit.export.int8 import INT8_FORMS, build_int8_graph

DYNAMIC_FORMS = ("auto", "native", "conv", "matmul", "qdq")  # qdq: the int8 dynamic graph's standard-ops form


class Graphs:
    """The deploy modules of `opts.graph` for one choice of kept channels. `net` and `spec` are the graph in the
    form its MACs and agreement are measured on: the only form, or the dynamic graph's convolution form.

    `opts` (gatekit.export.exporter.ExportOptions) is read when used: the forms asked for are those of the call.
    `channels`: per block, the kept channels of a static or hybrid graph or a pruned dense encoder (else None).
    `usage`: the gate usage a dynamic graph's native and int8 forms take their used channels from."""

    def __init__(
        self,
        model,
        opts,
        channels: list[torch.Tensor] | None,
        head: torch.nn.Linear | None,
        usage: GateUsage | None,
        int8: Int8Calibration,
    ):
        self.model = model
        self.opts = opts
        self.channels = channels
        self.head = head
        self.usage = usage
        self.int8 = int8
        self._built: dict = {}
        self.net, self.spec = self.graph(self.standard_form("onnx"))

    def standard_form(self, fmt: str, precision: str = "fp32") -> str | None:
        """The dynamic graph in standard ops for a format (OpenVINO's CPU plugin needs im2col + MatMul; int8: Q/DQ
        around whole convolutions, which both runtimes take)."""
        if self.opts.graph != "dynamic":
            return None
        if precision == "int8":
            return "qdq"
        return "matmul" if fmt == "openvino" else "conv"

    def dynamic_form(self, fmt: str, precision: str = "fp32") -> str | None:
        """The dynamic graph's form for a format and precision, as --dynamic-form resolves here (None: not dynamic)."""
        if self.opts.graph != "dynamic":
            return None
        want = self.opts.dynamic_form
        if want not in DYNAMIC_FORMS:
            raise GatekitError(f"unknown --dynamic-form {want!r}: choose one of {', '.join(DYNAMIC_FORMS)}")
        int8 = precision == "int8"
        if int8 and want in ("conv", "matmul"):
            raise GatekitError(
                f"--dynamic-form {want} is an fp32 form: int8 dynamic graphs are written as gatekit's "
                "int8 ops (--dynamic-form native) or in standard ops (--dynamic-form qdq); auto picks"
            )
        if not int8 and want == "qdq":
            raise GatekitError(
                "--dynamic-form qdq is the int8 dynamic graph's standard-ops form: add --precision "
                "int8, or use conv or matmul for fp32"
            )
        native_ok = FORMATS[fmt].native_library is not None
        runtime = FORMATS[fmt].runtime
        if want == "auto":
            if not native_ok:
                return self.standard_form(fmt, precision)
            lib, refused = native_ops.find_library(runtime)
            if lib is None:
                native_ops.warn_refused(refused, "dynamic graphs are exported in standard ops")
            return (
                "native"
                if lib is not None and self._library_runs(runtime, int8)
                else self.standard_form(fmt, precision)
            )
        if want == "native":
            if not native_ok:
                raise GatekitError(
                    f"the native dynamic form runs on {', '.join(f for f, r in FORMATS.items() if r.native_library)}"
                    f", not {fmt}"
                )
            lib, refused = native_ops.find_library(runtime)
            if lib is None and refused.state != "missing":
                raise GatekitError(f"the native dynamic form needs gatekit's op library for {runtime}: {refused}")
            if lib is None:
                raise GatekitError(
                    f"the native dynamic form needs gatekit's op library for {runtime}, and none "
                    "is built for the installed version: run `gatekit ops build` (`gatekit ops status` says why)"
                )
            if int8 and not self._library_runs(runtime, True):
                raise GatekitError(
                    f"gatekit's op library for {runtime} ({native_ops.library_for(runtime)}) has no "
                    f"int8 gated-block ops ({', '.join(self.int8_op_types())}): rebuild it with "
                    "`gatekit ops build`, or write the standard-ops form (--dynamic-form qdq)"
                )
        return want

    def int8_op_types(self) -> list[str]:
        """The gatekit int8 ops a native int8 dynamic graph of these options uses."""
        if self.opts.native_gate != "op":
            return ["GatedBlockInt8"]
        with_shortcut = self.opts.native_shortcut == "op" and any(b.downsample is not None for b in self.model.blocks)
        return ["GatedBlockWithGateInt8"] + (["GatedBlockWithGateAndShortcutInt8"] if with_shortcut else [])

    def _library_runs(self, runtime: str, int8: bool) -> bool:
        """Whether the op library built for `runtime` exists and (int8) runs the int8 ops these options use."""
        lib = native_ops.library_for(runtime)
        if lib is None or not int8:
            return lib is not None
        from gatekit.runtimes.native_probe import library_runs

        return library_runs(runtime, lib, self.int8_op_types())

    def min_size(self, form: str | None) -> int:
        """The smallest output size, in pixels a side, of a dynamic block that skips channels (--dynamic-min-size)."""
        if self.opts.dynamic_min_size is not None:
            return self.opts.dynamic_min_size
        return 0 if form == "native" else 8

    def used_channels(self) -> list[torch.Tensor]:
        """Per block, the channels some calibration image turned on (the native graph removes the others)."""
        return self.usage.used_channels(self.model.cfg.gate_group)

    def graph(self, form: str | None = None, precision: str = "fp32") -> tuple[torch.nn.Module, GraphSpec]:
        """The deploy module and its spec for a dynamic form (None: the graph's only form) and precision (int8: the
        int8 dynamic graph, calibrated), built once."""
        if self.opts.graph == "dynamic" and precision == "int8":
            return self._int8_graph(form)
        if form not in self._built:
            if form is None:
                built = build_graph(self.model, self.opts.graph, self.channels, self.head)
            elif form == "native":
                if self.opts.native_gate not in NATIVE_GATES:
                    raise GatekitError(
                        f"unknown --native-gate {self.opts.native_gate!r}: choose one of {', '.join(NATIVE_GATES)}"
                    )
                if self.opts.native_shortcut not in NATIVE_SHORTCUTS:
                    raise GatekitError(
                        f"unknown --native-shortcut {self.opts.native_shortcut!r}: choose one of "
                        f"{', '.join(NATIVE_SHORTCUTS)}"
                    )
                built = build_graph(
                    self.model,
                    "dynamic",
                    self.used_channels(),
                    self.head,
                    dynamic_form="native",
                    dynamic_min_size=self.min_size(form),
                    native_gate=self.opts.native_gate,
                    native_shortcut=self.opts.native_shortcut,
                )
            else:
                built = build_graph(
                    self.model, "dynamic", None, self.head, dynamic_form=form, dynamic_min_size=self.min_size(form)
                )
            self._built[form] = built
        return self._built[form]

    def _int8_graph(self, form: str | None) -> tuple[torch.nn.Module, GraphSpec]:
        """The int8 dynamic graph of a form ("native": gatekit's int8 ops, "qdq": standard ops), its scales calibrated
        once on the --quant-calib training images (the fp32 gated graph's activations; every form shares them) and
        its gate agreement with the fp32 gated graph measured on the same images."""
        if form not in INT8_FORMS:
            raise GatekitError(f"the int8 dynamic graph is written as {' or '.join(INT8_FORMS)}, not {form}")
        key = ("int8", form)
        if key not in self._built:
            net, spec = build_int8_graph(
                self.model,
                self.used_channels(),
                self.head,
                form,
                min_size=self.min_size(form),
                native_gate=self.opts.native_gate,
                native_shortcut=self.opts.native_shortcut,
                float_blocks=self.int8.float_blocks(),
            )
            self.int8.calibrate(net, form)
            self._built[key] = (net, spec)
        return self._built[key]

    def int8_record(self, form: str) -> dict:
        """The manifest's `quantization` of the int8 dynamic graph of a form, built and calibrated if it is not yet."""
        self._int8_graph(form)
        return self.int8.record(form)
