"""Where OpenVINO's CPU plugin should not pick its own memory layout: convolutions feeding a custom op.

The plugin runs a custom op (gatekit's native ops) on plain NCHW tensors.  A convolution feeding one (the
stem; a projection shortcut left in the graph) otherwise takes oneDNN's channels-last brgconv, and its output
then goes through the plugin's generic reorder to NCHW, which at 32 px costs more than the stem itself.
With oneDNN's direct jit convolution the output is channel-blocked and its reorder to NCHW is jit and cheap
(`benchmarks/bench_cpu/openvino-layout-hint-*.md`).  The request is the PrimitivesPriority run-time attribute,
which the plugin reads from an IR (it is not honoured when set on a model in memory); a priority the device
lacks is passed over.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gatekit.native_ops import DOMAIN

BLOCKED_CONV_PRIORITY = "cpu:jit_avx512,cpu:jit_avx2,cpu:jit_sse42"
# ops the plugin fuses into the convolution before them, or that keep its layout
_CONV_TAIL = {"Add", "Multiply", "Relu", "Clamp", "MaxPool"}


def prefer_blocked_feeders(model) -> dict:
    """Sets PrimitivesPriority on every Convolution whose output reaches a gatekit op through fused
    element-wise ops or max pooling; returns the record for a manifest ({"value", "nodes"})."""

    def feeds_op(node, depth: int = 0) -> bool:
        for out in node.outputs():
            for target in out.get_target_inputs():
                consumer = target.get_node()
                if consumer.get_type_info().version_id == DOMAIN:
                    return True
                if consumer.get_type_name() in _CONV_TAIL and depth < 4 and feeds_op(consumer, depth + 1):
                    return True
        return False

    nodes = []
    for node in model.get_ordered_ops():
        if node.get_type_name() == "Convolution" and feeds_op(node):
            node.get_rt_info()["PrimitivesPriority"] = BLOCKED_CONV_PRIORITY
            nodes.append(node.get_friendly_name())
    return {"value": BLOCKED_CONV_PRIORITY, "nodes": nodes}


def with_blocked_feeders(core, model):
    """The model as the CPU plugin should compile it: when prefer_blocked_feeders marks a node, the model is
    written to a temporary IR and read back, so that the plugin honours the attribute."""
    import openvino as ov

    if not prefer_blocked_feeders(model)["nodes"]:
        return model
    with tempfile.TemporaryDirectory(prefix="gatekit-ov-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return core.read_model(str(xml))
