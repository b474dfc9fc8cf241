"""TensorRT engines from a verified ONNX graph (TensorRT 10 Python API; 8.x and 11.x handled too).

An engine is specific to the GPU model and the TensorRT version that built it, so it must be built on
the device that runs it: run `gatekit export --format tensorrt` on that device (a Jetson builds its own
engines with JetPack's TensorRT). One engine per graph, precision and batch profile. No torch here.

fp16: TensorRT 8.x/10.x lower an fp32 network with BuilderFlag.FP16. TensorRT 11 removed that flag (all
networks are strongly typed), so there the ONNX graph itself is converted to fp16 first (`fp16_onnx`),
keeping float32 inputs and outputs, and built as is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gatekit.atomic import atomic_path
from gatekit.errors import GatekitError
from gatekit.runtimes.tensorrt_backend import INSTALL_HINT, cuda_check, device_name, load_cudart

# (op, input index) slots that must stay float32 in an fp16 graph (their type is not the op's T).
FP32_SLOTS = {("Resize", 2), ("Upsample", 1)}


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    precision: str = "fp32",
    batch: int = 1,
    max_batch: int | None = None,
    workspace_mb: int = 1024,
) -> dict:
    """Parses `onnx_path`, builds an fp32, fp16 or int8 engine and writes it atomically to `engine_path`.

    int8 takes a quantized (QDQ) ONNX graph (`gatekit export --precision int8 --format onnx`): explicit
    quantization, the scales are the graph's own (no TensorRT calibrator); the layers the graph leaves in
    float may run in fp16 too on TensorRT 8.x/10.x.

    The engine runs only on this GPU model with this TensorRT version: build it on the device that runs it.
    When the ONNX input's batch dimension is dynamic, the engine gets an optimization profile with batch
    min 1, opt `batch` and max `max_batch` (default `batch`); a fixed batch must equal `batch`.
    Returns {"tensorrt_version", "precision", "device_name", "input_shape", "batch_profile"}.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise GatekitError(INSTALL_HINT) from None
    if precision not in ("fp32", "fp16", "int8"):
        raise GatekitError(f"TensorRT precision must be fp32, fp16 or int8, got {precision}")
    hi = batch if max_batch is None else max_batch
    if batch < 1 or hi < batch:
        raise GatekitError(f"TensorRT batch profile needs 1 <= batch <= max_batch, got batch {batch}, max_batch {hi}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise GatekitError(f"no ONNX model at {onnx_path}")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10+ networks are always explicit-batch; 8.x needs the flag.
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    weakly_typed = hasattr(trt.BuilderFlag, "FP16")  # gone in TensorRT 11
    if precision == "fp16" and weakly_typed:
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise GatekitError("this GPU has no fast fp16: build an fp32 engine")
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8" and weakly_typed:  # TensorRT 11: strongly typed, the QDQ graph says it all
        config.set_flag(trt.BuilderFlag.INT8)
        if getattr(builder, "platform_has_fast_fp16", False):
            config.set_flag(trt.BuilderFlag.FP16)

    with tempfile.TemporaryDirectory(prefix="gatekit-trt-") as tmp:
        source = onnx_path
        if precision == "fp16" and not weakly_typed:
            source = Path(tmp) / "fp16.onnx"
            fp16_onnx(onnx_path, source)
        ok = parser.parse_from_file(str(source))  # from a file, so external weight data resolves
        if not ok:
            errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors)) or "no details"
            raise GatekitError(f"TensorRT's ONNX parser refused {onnx_path.name}: {' '.join(errors.split())[:500]}")
        if network.num_inputs != 1 or network.num_outputs != 1:
            raise GatekitError(
                f"{onnx_path.name} has {network.num_inputs} inputs and {network.num_outputs} outputs; "
                "gatekit builds graphs with one of each"
            )

        inp = network.get_input(0)
        shape = tuple(int(d) for d in inp.shape)
        if any(d == -1 for d in shape[1:]):
            raise GatekitError(
                f"{onnx_path.name} input {inp.name!r} has shape {shape}: only the batch dimension may be dynamic"
            )
        profile_dims = None
        if shape[0] == -1:
            profile_dims = ((1, *shape[1:]), (batch, *shape[1:]), (hi, *shape[1:]))
            profile = builder.create_optimization_profile()
            profile.set_shape(inp.name, *profile_dims)
            config.add_optimization_profile(profile)
        elif shape[0] != batch or hi != batch:
            raise GatekitError(
                f"{onnx_path.name} has a fixed batch of {shape[0]}; export it with a dynamic batch "
                f"for a batch {batch}..{hi} engine"
            )

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise GatekitError(f"TensorRT could not build an engine from {onnx_path.name} (see the TensorRT log above)")
    with atomic_path(engine_path) as tmp_engine:
        tmp_engine.write_bytes(bytes(serialized))
    return {
        "tensorrt_version": trt.__version__,
        "precision": precision,
        "device_name": _device_name(),
        "input_shape": list(shape),
        "batch_profile": [list(d) for d in profile_dims] if profile_dims else None,
    }


def _device_name() -> str | None:
    """The current GPU's name from cuda-python, or None where cuda-python is missing."""
    try:
        cudart = load_cudart()
    except ImportError:
        return None
    device = cuda_check(cudart.cudaGetDevice(), "cudaGetDevice")
    return device_name(cudart, device)


def fp16_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Writes `src` with float32 weights, constants and activations in float16, inputs and outputs kept float32.

    A Cast to float16 follows each float32 input and a Cast to float32 precedes each float32 output, so a
    strongly typed TensorRT network built from it runs in fp16 with the fp32 interface of the original.
    Slots that must stay float32 (Resize scales) keep their constants. Graphs with subgraphs are refused.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise GatekitError(f"{Path(src).name} has control-flow subgraphs; fp16 conversion handles flat graphs only")
    keep = {n.input[i] for n in graph.node for op, i in FP32_SLOTS if n.op_type == op and len(n.input) > i}

    def half(t: onnx.TensorProto) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)

    for i, init in enumerate(graph.initializer):
        if init.data_type == FLOAT and init.name not in keep:
            graph.initializer[i].CopyFrom(half(init))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF
            elif (
                attr.type == onnx.AttributeProto.TENSOR
                and attr.t.data_type == FLOAT
                and not (node.op_type == "Constant" and node.output[0] in keep)
            ):
                attr.t.CopyFrom(half(attr.t))  # Constant value, ConstantOfShape value

    def rename(old: str, new: str) -> None:
        for node in graph.node:
            node.input[:] = [new if x == old else x for x in node.input]
            node.output[:] = [new if x == old else x for x in node.output]

    head, tail = [], []
    for vi in graph.input:
        if vi.type.tensor_type.elem_type == FLOAT:
            rename(vi.name, vi.name + "_fp16")
            head.append(helper.make_node("Cast", [vi.name], [vi.name + "_fp16"], to=HALF, name=vi.name + "_to_fp16"))
    for vi in graph.output:
        if vi.type.tensor_type.elem_type == FLOAT:
            rename(vi.name, vi.name + "_fp16")
            tail.append(helper.make_node("Cast", [vi.name + "_fp16"], [vi.name], to=FLOAT, name=vi.name + "_to_fp32"))
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # intermediate float32 annotations would now be wrong
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def engine_from_artifact(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    precision: str = "fp32",
    data_dir: str | None = None,
    verify_images: int = 64,
) -> dict:
    """On the device (torch-free): builds a TensorRT engine from an exported, verified ONNX artifact,
    checks it against ONNX Runtime running that ONNX on the same real images (the ONNX itself was
    verified against PyTorch at export), and writes the engine with its manifest beside it.

    Returns the engine's manifest. Nothing is written when the check misses.
    """
    import json

    from gatekit.artifacts import FORMATS, load_inputs, open_artifact, publish
    from gatekit.runtimes import get_backend, load_session
    from gatekit.runtimes.verify import check, run_batched

    art = open_artifact(manifest_path)  # a missing or malformed manifest: one line naming it
    m = art.manifest
    if m.get("graph") == "dynamic" and m.get("precision") == "int8":
        raise GatekitError(
            f"{Path(manifest_path).name} is an int8 dynamic graph, which runs on ONNX Runtime and "
            "OpenVINO (gatekit's int8 ops or their Q/DQ form): TensorRT int8 engines are built from "
            "dense, static and hybrid int8 artifacts"
        )
    get_backend("tensorrt")  # not installed: one line saying how, before any work
    if m.get("format") != "onnx":
        raise GatekitError(
            f"{Path(manifest_path).name} is a {m.get('format')} artifact: build engines from the ONNX one"
        )
    if (precision == "int8") != (m.get("precision") == "int8"):
        raise GatekitError(
            "int8 engines are built from an int8 (QDQ) ONNX artifact (`gatekit export --precision int8 "
            f"--format onnx`), and only those; {Path(manifest_path).name} is {m.get('precision', 'fp32')}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{art.file.stem}{'-fp16' if precision == 'fp16' else ''}"
    batch = m["input"]["shape"][0]
    dynamic = batch == -1
    batch = 1 if dynamic else batch
    images, _ = load_inputs(m, max(verify_images, batch), data_dir)
    images = images[: len(images) - len(images) % batch]
    with load_session(art.file, "ort") as ref_session:
        reference = run_batched(ref_session, images, batch)
    trt = FORMATS["tensorrt"]
    with tempfile.TemporaryDirectory(dir=out, prefix=".engine-") as tmp:
        engine = Path(tmp) / f"{stem}{trt.suffix}"
        built = build_engine(art.file, engine, precision=precision, batch=batch, max_batch=8 if dynamic else None)
        with load_session(engine, "tensorrt", precision=precision) as session:
            err = check(
                f"{engine.name} (TensorRT against ONNX Runtime)",
                run_batched(session, images, batch),
                reference,
                precision,
            )
            runtime = dict(session.info.to_dict(), build=built)
        manifest = json.loads(json.dumps(m))
        manifest.update(
            format="tensorrt",
            precision=precision,
            files=trt.file_names(stem),
            runtime=runtime,
            verification={
                "reference": "onnxruntime running the verified ONNX artifact",
                "onnx_artifact": str(art.file),
                "images": int(len(images)),
                "relative_error": {f"batch{batch}": err},
                "tolerance": precision,
            },
        )
        publish(out, stem, "tensorrt", {"engine": engine}, manifest)
    return manifest
