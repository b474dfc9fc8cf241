"""A table of bad inputs across every subcommand: each must end with a non-zero exit, one line on stderr
that names the flag, file or field, no traceback, and no file created or changed.

Every case fails where the input is read or parsed, before any data is loaded or anything is timed, so
the whole table runs in seconds (torch is imported once, for the checkpoint cases)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from gatekit.bench.run import SCHEMA as BENCH_SCHEMA
from gatekit.cli import cli, main
from gatekit.pick.profile import SCHEMA as LUT_SCHEMA
from tests.test_data import huge_header_npz

NON_UTF8 = b"\xff\xfe\x80 not text \xc3\x28"
MODEL_CONFIG = {
    "arch": "resnet18",
    "width": 0.125,
    "stem": "cifar",
    "stem_padding": None,
    "input_size": 32,
    "gate_group": 1,
}
RECORD = {
    "schema": BENCH_SCHEMA,
    "runtime": {"name": "ort", "provider": "CPUExecutionProvider"},
    "threads": 1,
    "batch": 1,
    "precision": "fp32",
    "stats": {"p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2},
    "manifest": {
        "graph": "dense",
        "budget": 0.3,
        "macs": {"ratio_to_dense": 1.0},
        "checkpoint_sha256": "abc",
        "model_config": {"arch": "resnet18", "width": 0.25, "stem": "cifar", "input_size": 32, "gate_group": 1},
    },
    "machine": {"cpu": "test cpu", "cores": 2},
}
LUT = {
    "schema": LUT_SCHEMA,
    "runtime": {"name": "ort"},
    "threads": 1,
    "round_to": 16,
    "arch": {"arch": "resnet18", "width": 0.125, "stem": "cifar", "stem_padding": None, "input_size": 32},
    "stem": {"p50_ms": 0.01},
    "head": {"p50_ms": 0.01},
    "calibration": {"fit": {"p50_ms": {"scale": 1.0, "offset_ms": 0.0}, "p90_ms": {"scale": 1.0, "offset_ms": 0.0}}},
    "blocks": [{"index": 0, "planes": 16, "widths": [16], "p50_ms": [0.1], "p90_ms": [0.1]}],
}
MANIFEST = {
    "graph": "static",
    "format": "onnx",
    "files": {"onnx": "good.onnx"},
    "precision": "fp32",
    "model_config": MODEL_CONFIG,
    "macs": {"ratio_to_dense": 0.5},
    "input": {
        "name": "input",
        "shape": [1, 3, 32, 32],
        "dtype": "float32",
        "layout": "NCHW",
        "scale": 1 / 255,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "dataset": "cifar10",
        "data_dir": None,
    },
    "gate_usage": {"images": 10, "counts": [[1, 2]]},
}


def _without(d: dict, *keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _safetensors(path: Path, metadata: dict | None, tensors: dict | None = None) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors or {"unused": np.zeros(1, np.float32)}, str(path), metadata=metadata)


def _workspace(w: Path) -> None:
    """Small hand-made bad (and a few good) files, named as the cases below use them."""

    def put(rel: str, content) -> None:
        p = w / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif isinstance(content, str):
            p.write_text(content)
        else:
            p.write_text(json.dumps(content))

    (w / "dir").mkdir()
    put("file", "a plain file\n")
    huge_header_npz(w / "huge.npz")  # x_train's header claims 3 TiB
    # export manifests
    put("m/good.onnx", b"not really onnx")
    put("m/good.onnx.json", MANIFEST)
    for name, content in {
        "number": "3",
        "list": "[1, 2]",
        "string": '"static"',
        "empty": "",
        "nonutf8": NON_UTF8,
        "truncated": '{"graph": "st',
        "nokeys": {"graph": "dense"},
        "format": dict(MANIFEST, format="tflite"),
        "files_number": dict(MANIFEST, files=3),
        "files_empty": dict(MANIFEST, files={}),
        "files_list": dict(MANIFEST, files=["good.onnx"]),
        "graph_number": dict(MANIFEST, graph=7),
        "input_number": dict(MANIFEST, input=3),
        "input_partial": dict(MANIFEST, input={"dataset": "cifar10"}),
        "input_shape": dict(MANIFEST, input=dict(MANIFEST["input"], shape="32")),
        "macs_list": dict(MANIFEST, macs=[0.5]),
        "no_input": _without(MANIFEST, "input"),
        "no_usage": _without(MANIFEST, "gate_usage"),
        "usage_list": dict(MANIFEST, gate_usage=[1, 2]),
        "usage_images": dict(MANIFEST, gate_usage={"counts": [[1]], "images": "ten"}),
        "no_model_config": _without(MANIFEST, "model_config"),
        "sha_number": dict(MANIFEST, sha256=3),
        "sha_missing": dict(MANIFEST, sha256={}),
    }.items():
        if isinstance(content, dict) and content.get("files") == MANIFEST["files"]:  # each describes its own file
            content = dict(content, files={"onnx": f"{name}.onnx"})
        put(f"m/{name}.onnx.json", content)
    put("m/sha_missing.onnx", b"an unhashed file")
    # a file edited after export (its manifest has the sha256 of other bytes); a manifest naming another's file
    put("m/edited.onnx", b"edited bytes")
    put(
        "m/edited.onnx.json",
        dict(MANIFEST, files={"onnx": "edited.onnx"}, sha256={"onnx": hashlib.sha256(b"exported bytes").hexdigest()}),
    )
    put("m/other.onnx.json", MANIFEST)
    put("m/orphan.onnx", b"an artifact without a manifest")
    put("oldrun/metrics.jsonl", '{"epoch": 1}\n')  # a directory that holds another run
    put("m/model.tflite", b"not a gatekit format")
    # benchmark results (JSON lines)
    put("r/good.jsonl", json.dumps(RECORD) + "\n")
    put(
        "r/no_model_config.jsonl",
        json.dumps(dict(RECORD, manifest={k: v for k, v in RECORD["manifest"].items() if k != "model_config"})) + "\n",
    )
    for name, content in {
        "number": "3\n",
        "list": "[1]\n",
        "string": '"x"\n',
        "nonutf8": NON_UTF8,
        "empty": "\n",
        "badline": json.dumps(RECORD) + "\n{not json\n",
        "schema": json.dumps(dict(RECORD, schema="other/9")) + "\n",
        "no_manifest": json.dumps(_without(RECORD, "manifest")) + "\n",
        "no_machine": json.dumps(_without(RECORD, "machine")) + "\n",
        "threads_string": json.dumps(dict(RECORD, threads="one")) + "\n",
        "runtime_string": json.dumps(dict(RECORD, runtime="ort")) + "\n",
        "no_macs": json.dumps(dict(RECORD, manifest={"graph": "dense"})) + "\n",
        "stats_list": json.dumps(dict(RECORD, stats=[1.0])) + "\n",
        "p90_string": json.dumps(dict(RECORD, stats={"p50_ms": 1.0, "p90_ms": "fast"})) + "\n",
        "edited": json.dumps(dict(RECORD, edited=["a.onnx: its bytes do not match"])) + "\n",
    }.items():
        put(f"r/{name}.jsonl", content)
    # `gatekit eval --json` outputs
    for name, content in {
        "number": "3",
        "list": "[]",
        "nonutf8": NON_UTF8,
        "truncated": '{"paths": ',
        "nokeys": {"paths": {}},
        "paths_list": {"checkpoint_sha256": "abc", "paths": [1]},
        "paths_numbers": {"checkpoint_sha256": "abc", "paths": {"dense": 0.9}},
        "sha_number": {"checkpoint_sha256": 5, "paths": {"dense": {"knn20": 0.9}}},
    }.items():
        put(f"acc/{name}.json", content)
    # device LUTs
    put("lut/good.json", LUT)
    for name, content in {
        "number": "3",
        "list": "[]",
        "nonutf8": NON_UTF8,
        "truncated": "{",
        "noschema": _without(LUT, "schema"),
        "no_blocks": _without(LUT, "blocks"),
        "blocks_empty": dict(LUT, blocks=[]),
        "blocks_numbers": dict(LUT, blocks=[1, 2]),
        "block_no_widths": dict(LUT, blocks=[{"index": 0, "planes": 16, "p50_ms": [0.1], "p90_ms": [0.1]}]),
        "no_fit": dict(LUT, calibration={"configs": []}),
        "runtime_string": dict(LUT, runtime="ort"),
        "threads_zero": dict(LUT, threads=0),
        "round_to_string": dict(LUT, round_to="16"),
        "no_head": _without(LUT, "head"),
        "stem_string": dict(LUT, stem={"p50_ms": "fast"}),
    }.items():
        put(f"lut/{name}.json", content)
    # recipes
    for name, content in {
        "epochs_string": 'epochs = "three"\n',
        "budget_string": 'budget = "x"\n',
        "width_list": "width = [1]\n",
        "unknown_key": "colour = 1\n",
        "nonutf8": NON_UTF8,
        "not_toml": "epochs = \n",
        "blur_short": "blur_p = [0.1]\n",
        "budget_range": "budget = 2.0\n",
        "amp_string": 'amp = "yes"\n',
        "table": "[model]\nwidth = 1\n",
        "lr_string": 'lr = "fast"\n',
        "threads_float": "threads = 1.5\n",
        "epochs_zero": "epochs = 0\n",
        "epochs_float": "epochs = 3.5\n",
        "method": 'method = "simclr"\n',
        "dataset": 'dataset = "mnist"\n',
        "arch": 'arch = "resnet50"\n',
        "blur_strings": 'blur_p = ["a", "b"]\n',
    }.items():
        put(f"recipes/{name}.toml", content)
    # checkpoints (model.safetensors in a run directory)
    put("ckpt/empty/model.safetensors", b"")
    put("ckpt/garbage/model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    put("ckpt/text/model.safetensors", "just some text that is long enough to have a header length\n")
    (w / "ckpt/no_model").mkdir(parents=True)
    _safetensors(w / "ckpt/no_metadata/model.safetensors", None)
    for name, config in {
        "mc_number": "3",
        "mc_list": "[1, 2]",
        "mc_string": '"resnet18"',
        "mc_unknown": '{"bogus": 1}',
        "mc_width_string": json.dumps(dict(MODEL_CONFIG, width="wide")),
        "mc_arch": json.dumps(dict(MODEL_CONFIG, arch="resnet99")),
        "mc_width_zero": json.dumps(dict(MODEL_CONFIG, width=0)),
    }.items():
        _safetensors(w / f"ckpt/{name}/model.safetensors", {"model_config": config})
    _safetensors(
        w / "ckpt/tc_number/model.safetensors", {"model_config": json.dumps(MODEL_CONFIG), "train_config": "3"}
    )
    # another width's stem: the metadata names an architecture the tensors are not
    _safetensors(
        w / "ckpt/other_arch/model.safetensors",
        {"model_config": json.dumps(dict(MODEL_CONFIG, width=0.25))},
        {"stem_conv.weight": np.zeros((8, 3, 3, 3), np.float32)},
    )
    _safetensors(w / "ckpt/no_tensors/model.safetensors", {"model_config": json.dumps(MODEL_CONFIG)})
    # training states (checkpoint.pt) to --resume from
    import torch

    put("pt/empty/checkpoint.pt", b"")
    put("pt/garbage/checkpoint.pt", b"PK\x03\x04 not a zip at all")
    for name, state in {
        "keyless": {},
        "number": 3,
        "config_not_json": {"config": "{not json"},
        "config_list": {"config": "[1]"},
        "config_types": {"config": json.dumps({"epochs": "x"})},
        "config_unknown": {"config": json.dumps({"colour": 1})},
    }.items():
        (w / "pt" / name).mkdir(parents=True)
        torch.save(state, w / "pt" / name / "checkpoint.pt")


W = "{w}"
OUT = ["--out", f"{W}/new"]
# (id, argv, what the one line must contain)
CASES: list[tuple[str, list[str], str]] = []


def case(cid: str, argv: str, expect: str) -> None:
    CASES.append((cid, argv.split(), expect))


# --- train: flags ---
for flag, value, expect in [
    ("--threads", "0", "'--threads'"),
    ("--threads", "-2", "'--threads'"),
    ("--threads", "two", "'--threads'"),
    ("--device", "tpu", "'--device'"),
    ("--device", "cuda:x", "'--device'"),
    ("--device", "gpu0", "'--device'"),
    ("--stem-padding", "-3", "'--stem-padding'"),
    ("--proj-dim", "0", "'--proj-dim'"),
    ("--lr", "-1", "'--lr'"),
    ("--lr", "0", "'--lr'"),
    ("--lr", "nan", "'--lr'"),
    ("--lr", "inf", "'--lr'"),
    ("--warmup-epochs", "-1", "'--warmup-epochs'"),
    ("--warmup-epochs", "nan", "'--warmup-epochs'"),
    ("--budget", "0", "'--budget'"),
    ("--budget", "1.5", "'--budget'"),
    ("--budget", "nan", "'--budget'"),
    ("--width", "0", "'--width'"),
    ("--width", "-1", "'--width'"),
    ("--width", "inf", "'--width'"),
    ("--epochs", "0", "'--epochs'"),
    ("--epochs", "2.5", "'--epochs'"),
    ("--batch-size", "1", "'--batch-size'"),
    ("--limit", "0", "'--limit'"),
    ("--input-size", "4", "'--input-size'"),
    ("--gate-group", "0", "'--gate-group'"),
    ("--method", "simclr", "'--method'"),
    ("--stem", "vgg", "'--stem'"),
    ("--arch", "resnet50", "unknown architecture 'resnet50'"),
    ("--dataset", "mnist", "unknown dataset 'mnist'"),
    ("--recipe", "imagenet-1k", "recipe 'imagenet-1k' not found"),
]:
    case(f"train{flag}={value}", f"train {flag} {value} --out {W}/new", expect)
case("train-no-out", "train --epochs 1", "'--out'")
case("train-unknown-flag", f"train --colour red --out {W}/new", "--colour")
case("train-out-is-file", f"train --out {W}/file", "--out")
case("train-out-under-file", f"train --out {W}/file/run", "--out")
case("train-json-is-dir", f"train --out {W}/new --json {W}/dir", "--json")
case("train-json-under-file", f"train --out {W}/new --json {W}/file/s.json", "--json")
# --- train: recipes ---
for name, expect in [
    ("epochs_string", "epochs_string.toml: bad epochs"),
    ("budget_string", "budget_string.toml: bad budget"),
    ("width_list", "width_list.toml: bad width"),
    ("unknown_key", "unknown_key.toml: unknown training settings: colour"),
    ("nonutf8", "nonutf8.toml"),
    ("not_toml", "not_toml.toml"),
    ("blur_short", "blur_p"),
    ("budget_range", "budget"),
    ("amp_string", "amp_string.toml: bad amp"),
    ("table", "table.toml: unknown"),
    ("lr_string", "lr_string.toml: bad lr"),
    ("threads_float", "threads_float.toml: bad threads"),
    ("epochs_zero", "epochs"),
    ("epochs_float", "epochs_float.toml: bad epochs"),
    ("method", "simclr"),
    ("dataset", "mnist"),
    ("arch", "resnet50"),
    ("blur_strings", "blur_p"),
]:
    case(f"train-recipe-{name}", f"train --recipe {W}/recipes/{name}.toml --out {W}/new", expect)
case("train-recipe-missing", f"train --recipe {W}/recipes/none.toml --out {W}/new", "none.toml")
case("train-recipe-dir", f"train --recipe {W}/dir --out {W}/new", "recipe")
# --- train: resume from a bad training state ---
for name in ("empty", "garbage", "keyless", "number", "config_not_json", "config_list"):
    case(f"train-resume-{name}", f"train --resume --out {W}/pt/{name}", f"pt/{name}/checkpoint.pt")
case("train-resume-config-types", f"train --resume --out {W}/pt/config_types", "config_types/checkpoint.pt: bad epochs")
case(
    "train-resume-config-unknown",
    f"train --resume --out {W}/pt/config_unknown",
    "config_unknown/checkpoint.pt: unknown",
)

# --- train: data (refused before a model is built) ---
case("train-data-dir-is-file", f"train --data-dir {W}/file --out {W}/new", "dataset cifar10 not found")
case("train-npz-not-npz", f"train --dataset npz --data-dir {W}/m/good.onnx.json --out {W}/new", "good.onnx.json")
case(
    "train-npz-huge-header",
    f"train --dataset npz --data-dir {W}/huge.npz --out {W}/new",
    "huge.npz: x_train claims a uint8 array of shape (16777216, 256, 256, 3) (3.0 TiB)",
)
case("train-resume-nothing", f"train --resume --out {W}/new", "nothing to resume")

# --- eval ---
for flag, value in [("--threads", "0"), ("--device", "tpu"), ("--limit-train", "0"), ("--path", "middle")]:
    case(f"eval{flag}={value}", f"eval {W}/ckpt/no_metadata {flag} {value}", f"'{flag}'")
CKPTS = [
    ("empty", "corrupt checkpoint"),
    ("garbage", "corrupt checkpoint"),
    ("text", "corrupt checkpoint"),
    ("no_model", "no checkpoint at"),
    ("no_metadata", "model_config"),
    ("mc_number", "model_config"),
    ("mc_list", "model_config"),
    ("mc_string", "model_config"),
    ("mc_unknown", "bogus"),
    ("mc_width_string", "width"),
    ("mc_arch", "resnet99"),
    ("mc_width_zero", "width"),
    ("tc_number", "train_config"),
    ("other_arch", "stem_conv.weight"),
    ("no_tensors", "missing"),
]
for name, expect in CKPTS:
    case(f"eval-ckpt-{name}", f"eval {W}/ckpt/{name}", expect)
case("eval-missing", f"eval {W}/nothing", "no checkpoint at")
case("eval-file", f"eval {W}/file", "corrupt checkpoint")
case("eval-out-is-file", f"eval {W}/ckpt/no_metadata --out {W}/file", "--out")
case("eval-json-is-dir", f"eval {W}/ckpt/no_metadata --json {W}/dir", "--json")
case("eval-json-under-file", f"eval {W}/ckpt/no_metadata --json {W}/file/e.json", "--json")

# --- export ---
for flag, value in [
    ("--calib", "0"),
    ("--min-usage", "1.5"),
    ("--min-usage", "-0.1"),
    ("--min-usage", "nan"),
    ("--round-to", "0"),
    ("--batch", "0"),
    ("--verify-images", "0"),
    ("--verify-images", "31"),
    ("--knn-train", "0"),
    ("--knn-test", "0"),
    ("--quant-calib", "0"),
    ("--record-inputs", "-1"),
    ("--threads", "0"),
    ("--min-cosine", "2"),
    ("--max-knn-drop", "-1"),
    ("--max-knn-drop", "nan"),
    ("--dynamic-min-size", "-1"),
    ("--dynamic-form", "sparse"),
]:
    case(f"export{flag}={value}", f"export {W}/ckpt/no_metadata --out {W}/new {flag} {value}", f"'{flag}'")
case("export-graph", f"export {W}/ckpt/no_metadata --out {W}/new --graph sparse", "unknown graph 'sparse'")
case("export-format", f"export {W}/ckpt/no_metadata --out {W}/new --format tflite", "unknown format 'tflite'")
case("export-precision", f"export {W}/ckpt/no_metadata --out {W}/new --precision fp64", "unknown precision 'fp64'")
for name, expect in CKPTS[:7] + [
    ("mc_unknown", "bogus"),
    ("other_arch", "stem_conv.weight"),
    ("tc_number", "train_config"),
]:
    case(f"export-ckpt-{name}", f"export {W}/ckpt/{name} --out {W}/new", expect)
case("export-no-out", f"export {W}/ckpt/no_metadata", "'--out'")
case("export-out-is-file", f"export {W}/ckpt/no_metadata --out {W}/file", "--out")
case("export-out-under-file", f"export {W}/ckpt/no_metadata --out {W}/file/art", "--out")
case("export-json-is-dir", f"export {W}/ckpt/no_metadata --out {W}/new --json {W}/dir", "--json")

# --- bench ---
for flag, value in [
    ("--threads", "0"),
    ("--threads", "1,-1"),
    ("--threads", "a"),
    ("--threads", ","),
    ("--batch", "0"),
    ("--inputs", "0"),
    ("--warmup-runs", "-5"),
    ("--warmup-seconds", "-1"),
    ("--min-runs", "0"),
    ("--min-seconds", "-1"),
    ("--min-seconds", "nan"),
    ("--ops", "gpu"),
]:
    case(f"bench{flag}={value}", f"bench {W}/m/good.onnx.json --quiet {flag} {value}", f"'{flag}'")
case("bench-runtime", f"bench {W}/m/good.onnx.json --quiet --runtime tflite", "unknown runtime 'tflite'")
for name, expect in [
    ("number", "number.onnx.json"),
    ("list", "list.onnx.json"),
    ("string", "string.onnx.json"),
    ("empty", "empty.onnx.json"),
    ("nonutf8", "nonutf8.onnx.json"),
    ("truncated", "truncated.onnx.json"),
    ("nokeys", "nokeys.onnx.json"),
    ("format", "tflite"),
    ("files_number", "'files'"),
    ("files_empty", "files_empty.onnx.json"),
    ("files_list", "'files'"),
    ("graph_number", "'graph'"),
    ("input_number", "'input'"),
    ("input_partial", "'input' lacks"),
    ("input_shape", "input.shape"),
    ("macs_list", "'macs'"),
    ("no_input", "'input'"),
]:
    case(f"bench-manifest-{name}", f"bench {W}/m/{name}.onnx.json --quiet", expect)
case("bench-no-manifest", f"bench {W}/m/orphan.onnx --quiet", "no manifest for")
case("bench-not-artifact", f"bench {W}/m/model.tflite --quiet", "not an artifact")
case("bench-missing", f"bench {W}/m/missing.onnx --quiet", "no manifest for")
case("bench-dir", f"bench {W}/dir --quiet", "not an artifact")
case("bench-json-is-dir", f"bench {W}/m/good.onnx.json --quiet --json {W}/dir", "--json")
case("bench-table-under-file", f"bench {W}/m/good.onnx.json --quiet --table {W}/file/t.md", "--table")
case("bench-plot-is-dir", f"bench {W}/m/good.onnx.json --quiet --plot {W}/dir", "--plot")
case("bench-sweep-no-out", f"bench {W}/ckpt/no_metadata --quiet --sweep", "--sweep needs --out")
case("bench-sweep-out-is-file", f"bench {W}/ckpt/no_metadata --quiet --sweep --out {W}/file", "--out")

# --- report ---
for name, expect in [
    ("number", "number.jsonl:1"),
    ("list", "list.jsonl:1"),
    ("string", "string.jsonl:1"),
    ("nonutf8", "nonutf8.jsonl"),
    ("empty", "holds no benchmark records"),
    ("badline", "badline.jsonl:2"),
    ("schema", "schema.jsonl:1"),
    ("no_manifest", "lacks manifest"),
    ("no_machine", "lacks machine"),
]:
    case(f"report-{name}", f"report {W}/r/{name}.jsonl --out {W}/page.md", expect)
case("report-missing", f"report {W}/r/none.jsonl --out {W}/page.md", "no results file at")
case("report-dir", f"report {W}/dir --out {W}/page.md", "no results file at")
case("report-no-out", f"report {W}/r/good.jsonl", "'--out'")
case("report-out-is-dir", f"report {W}/r/good.jsonl --out {W}/dir", "--out")
case("report-html-under-file", f"report {W}/r/good.jsonl --out {W}/page.md --html {W}/file/p.html", "--html")
case("report-json-is-dir", f"report {W}/r/good.jsonl --out {W}/page.md --json {W}/dir", "--json")
case("report-plots-dir-is-file", f"report {W}/r/good.jsonl --out {W}/page.md --plots-dir {W}/file", "--plots-dir")

# --- pick ---
for value in ("-1", "0", "nan", "inf", "fast"):
    case(f"pick--target-ms={value}", f"pick --target-ms {value} --results {W}/r/good.jsonl", "'--target-ms'")
for flag, value in [
    ("--percentile", "95"),
    ("--metric", "top5"),
    ("--threads", "0"),
    ("--batch", "0"),
    ("--margin", "1"),
    ("--margin", "-0.1"),
    ("--margin", "nan"),
]:
    case(f"pick{flag}={value}", f"pick --target-ms 1 --results {W}/r/good.jsonl {flag} {value}", f"'{flag}'")
case("pick-no-target", f"pick --results {W}/r/good.jsonl", "'--target-ms'")
case("pick-nothing", "pick --target-ms 1", "needs --results")
for name, expect in [
    ("number", "number.jsonl:1"),
    ("list", "list.jsonl:1"),
    ("nonutf8", "nonutf8.jsonl"),
    ("empty", "no recorded result"),
    ("badline", "badline.jsonl:2"),
    ("schema", "schema.jsonl:1"),
    ("no_manifest", "manifest"),
    ("threads_string", "threads"),
    ("runtime_string", "runtime.name"),
    ("no_macs", "manifest.macs"),
    ("stats_list", "stats"),
    ("p90_string", "p90_ms"),
]:
    case(f"pick-results-{name}", f"pick --target-ms 1 --results {W}/r/{name}.jsonl", expect)
case("pick-results-missing", f"pick --target-ms 1 --results {W}/r/none.jsonl", "no results file at")
case("pick-results-dir", f"pick --target-ms 1 --results {W}/dir", "no results file at")
for name, expect in [
    ("number", "number.json"),
    ("list", "list.json"),
    ("nonutf8", "nonutf8.json"),
    ("truncated", "truncated.json"),
    ("nokeys", "nokeys.json"),
    ("paths_list", "'paths'"),
    ("paths_numbers", "'paths'"),
    ("sha_number", "checkpoint_sha256"),
]:
    case(
        f"pick-accuracy-{name}", f"pick --target-ms 1 --results {W}/r/good.jsonl --accuracy {W}/acc/{name}.json", expect
    )
case(
    "pick-accuracy-missing", f"pick --target-ms 1 --results {W}/r/good.jsonl --accuracy {W}/acc/none.json", "none.json"
)
case(
    "pick-accuracy-dir",
    f"pick --target-ms 1 --results {W}/r/good.jsonl --accuracy {W}/dir",
    "cannot read accuracy results",
)
for name, expect in [
    ("number", "number.json"),
    ("list", "list.json"),
    ("nonutf8", "nonutf8.json"),
    ("truncated", "truncated.json"),
    ("noschema", "noschema.json"),
    ("no_blocks", "'blocks'"),
    ("blocks_empty", "'blocks'"),
    ("blocks_numbers", "blocks[0]"),
    ("block_no_widths", "blocks[0]"),
    ("no_fit", "calibration.fit"),
    ("runtime_string", "'runtime'"),
    ("threads_zero", "'threads'"),
    ("round_to_string", "'round_to'"),
    ("no_head", "'head'"),
    ("stem_string", "stem.p50_ms"),
]:
    case(f"pick-lut-{name}", f"pick --target-ms 1 --lut {W}/lut/{name}.json --usage {W}/m/good.onnx.json", expect)
case("pick-lut-missing", f"pick --target-ms 1 --lut {W}/lut/none.json --usage {W}/m/good.onnx.json", "no such LUT")
case("pick-lut-alone", f"pick --target-ms 1 --lut {W}/lut/good.json", "needs --usage")
case(
    "pick-lut-checkpoint-alone",
    f"pick --target-ms 1 --lut {W}/lut/good.json --checkpoint {W}/ckpt/empty",
    "--export-to",
)
for name, expect in [
    ("number", "number.onnx.json"),
    ("nokeys", "nokeys.onnx.json"),
    ("nonutf8", "nonutf8.onnx.json"),
    ("no_usage", "no gate usage"),
    ("usage_list", "no gate usage"),
    ("usage_images", "gate_usage"),
    ("no_model_config", "model_config"),
    ("orphan", "no manifest for"),
]:
    suffix = "onnx" if name == "orphan" else "onnx.json"
    case(f"pick-usage-{name}", f"pick --target-ms 1 --lut {W}/lut/good.json --usage {W}/m/{name}.{suffix}", expect)
case("pick-json-is-dir", f"pick --target-ms 1 --results {W}/r/good.jsonl --json {W}/dir", "--json")
case("pick-plot-under-file", f"pick --target-ms 1 --results {W}/r/good.jsonl --plot {W}/file/p.png", "--plot")
case(
    "pick-export-to-file",
    f"pick --target-ms 1 --lut {W}/lut/good.json --checkpoint {W}/ckpt/empty --export-to {W}/file",
    "--export-to",
)

# --- engine ---
for name, expect in [
    ("number", "number.onnx.json"),
    ("nonutf8", "nonutf8.onnx.json"),
    ("nokeys", "nokeys.onnx.json"),
    ("files_number", "'files'"),
    ("input_partial", "'input' lacks"),
]:
    case(f"engine-manifest-{name}", f"engine {W}/m/{name}.onnx.json --out {W}/new", expect)
case("engine-no-manifest", f"engine {W}/m/orphan.onnx --out {W}/new", "no manifest for")
case("engine-not-artifact", f"engine {W}/m/model.tflite --out {W}/new", "not an artifact")
case("engine-precision", f"engine {W}/m/good.onnx.json --out {W}/new --precision fp64", "'--precision'")
case("engine-no-out", f"engine {W}/m/good.onnx.json", "'--out'")
case("engine-out-is-file", f"engine {W}/m/good.onnx.json --out {W}/file", "--out")
case("engine-json-is-dir", f"engine {W}/m/good.onnx.json --out {W}/new --json {W}/dir", "--json")

# --- ops ---
case("ops-build-jobs", "ops build --jobs 0", "'--jobs'")
case("ops-build-json-is-dir", f"ops build --json {W}/dir", "--json")
case("ops-status-json-is-dir", f"ops status --json {W}/dir", "--json")
case("ops-status-json-under-file", f"ops status --json {W}/file/s.json", "--json")
case("ops-unknown", "ops clean", "clean")

# --- profile ---
for flag, value in [
    ("--threads", "0"),
    ("--threads", "-1"),
    ("--width", "0"),
    ("--width", "-0.5"),
    ("--width", "5"),
    ("--width", "nan"),
    ("--input", "4"),
    ("--round-to", "0"),
    ("--check", "-1"),
    ("--min-runs", "0"),
    ("--min-seconds", "-1"),
    ("--min-seconds", "nan"),
    ("--stem-padding", "-3"),
    ("--seed", "-1"),
    ("--precision", "int4"),
    ("--arch", "resnet50"),
    ("--stem", "vgg"),
]:
    case(f"profile{flag}={value}", f"profile --out {W}/lut.json {flag} {value}", f"'{flag}'")
case("profile-runtime", f"profile --out {W}/lut.json --runtime tflite", "unknown runtime")
case("profile-dataset", f"profile --out {W}/lut.json --dataset mnist", "unknown dataset 'mnist'")
case("profile-npz-not-npz", f"profile --out {W}/lut.json --dataset npz --data-dir {W}/file", "corrupt dataset file")
case("profile-no-out", "profile", "'--out'")
case("profile-out-is-dir", f"profile --out {W}/dir", "--out")
case("profile-out-under-file", f"profile --out {W}/file/lut.json", "--out")
case("profile-plot-is-dir", f"profile --out {W}/lut.json --plot {W}/dir", "--plot")
case("profile-json-under-file", f"profile --out {W}/lut.json --json {W}/file/s.json", "--json")

# --- report: a record without the architecture it groups by ---
case("report-record-no-model-config", f"report {W}/r/no_model_config.jsonl --out {W}/rep.md", "manifest.model_config")

# --- accuracy, compare, prune ---
ACC_LINE = json.dumps({"schema": "gatekit.accuracy/1", "artifact": "a.onnx", "manifest": {}, "knn": {"top1": "high"}})
for flag, value in [
    ("--threads", "0"),
    ("--threads", "-1"),
    ("--train-images", "0"),
    ("--test-images", "-5"),
    ("--ops", "gpu"),
]:
    case(f"accuracy{flag}={value}", f"accuracy {W}/m/good.onnx.json --out {W}/acc.jsonl {flag} {value}", f"'{flag}'")
case("accuracy-no-out", f"accuracy {W}/m/good.onnx.json", "'--out'")
case("accuracy-no-artifact", f"accuracy --out {W}/acc.jsonl", "ARTIFACTS")
case("accuracy-out-is-dir", f"accuracy {W}/m/good.onnx.json --out {W}/dir", "--out")
case("accuracy-out-under-file", f"accuracy {W}/m/good.onnx.json --out {W}/file/a.jsonl", "--out")
case("accuracy-orphan", f"accuracy {W}/m/orphan.onnx --out {W}/acc.jsonl", "no manifest")
case(
    "accuracy-runtime",
    f"accuracy {W}/m/good.onnx.json --runtime tflite --out {W}/acc.jsonl",
    "unknown runtime 'tflite'",
)
case("compare-no-accuracy", f"compare --results {W}/r/good.jsonl --out {W}/new", "'--accuracy'")
case(
    "compare-accuracy-is-results",
    f"compare --results {W}/r/good.jsonl --accuracy {W}/r/good.jsonl --out {W}/new",
    "expected gatekit.accuracy/1",
)
case(
    "compare-accuracy-missing",
    f"compare --results {W}/r/good.jsonl --accuracy {W}/nothing.jsonl --out {W}/new",
    "nothing.jsonl",
)
case("compare-results-number", f"compare --results {W}/file --accuracy {W}/r/good.jsonl --out {W}/new", "file")
case(
    "compare-metric",
    f"compare --results {W}/r/good.jsonl --accuracy {W}/r/good.jsonl --metric top5 --out {W}/new",
    "'--metric'",
)
case(
    "compare-budget",
    f"compare --results {W}/r/good.jsonl --accuracy {W}/r/good.jsonl --budget 0 --out {W}/new",
    "'--budget'",
)
case(
    "compare-name-path",
    f"compare --results {W}/r/good.jsonl --accuracy {W}/r/good.jsonl --name ../x --out {W}/new",
    "--name",
)
case(
    "compare-gate-group",
    f"compare --results {W}/r/good.jsonl --accuracy {W}/r/good.jsonl --gate-group 0 --out {W}/new",
    "'--gate-group'",
)
case("compare-out-is-file", f"compare --results {W}/r/good.jsonl --accuracy {W}/r/good.jsonl --out {W}/file", "--out")
for flag, value in [
    ("--ratio", "1"),
    ("--ratio", "-0.1"),
    ("--ratio", "nan"),
    ("--round-to", "0"),
    ("--importance", "taylor"),
]:
    case(f"prune{flag}={value}", f"prune {W}/ckpt/empty --out {W}/new {flag} {value}", f"'{flag}'")
case("prune-no-ratio", f"prune {W}/ckpt/empty --out {W}/new", "'--ratio'")
case("prune-empty-checkpoint", f"prune {W}/ckpt/empty --ratio 0.5 --out {W}/new", "ckpt/empty")
case("prune-no-checkpoint", f"prune {W}/ckpt/no_model --ratio 0.5 --out {W}/new", "no checkpoint")
case("prune-out-is-file", f"prune {W}/ckpt/empty --ratio 0.5 --out {W}/file", "--out")
case("prune-json-is-dir", f"prune {W}/ckpt/empty --ratio 0.5 --out {W}/new --json {W}/dir", "--json")
case("train-init-missing", f"train --init {W}/ckpt/no_model --epochs 1 --out {W}/new", "no checkpoint")

# --- files that differ from their manifest (sha256 and names), and --trust-edited ---
EDITED = "edited.onnx: its bytes do not match the sha256 in edited.onnx.json"
OTHER = "'files.onnx' points at 'good.onnx', not at this manifest's 'other.onnx'"
for cmd, tail in [("bench", "--quiet"), ("engine", f"--out {W}/new"), ("accuracy", f"--out {W}/acc.jsonl")]:
    case(f"{cmd}-edited", f"{cmd} {W}/m/edited.onnx.json {tail}", EDITED)
    case(f"{cmd}-edited-file", f"{cmd} {W}/m/edited.onnx {tail}", EDITED)
    case(f"{cmd}-other", f"{cmd} {W}/m/other.onnx.json {tail}", OTHER)
    case(f"{cmd}-sha256-number", f"{cmd} {W}/m/sha_number.onnx.json {tail}", "'sha256' must be a table")
    case(f"{cmd}-sha256-missing", f"{cmd} {W}/m/sha_missing.onnx.json {tail}", "'sha256' has no hash for 'onnx'")
    case(f"{cmd}-trust-edited-value", f"{cmd} {W}/m/edited.onnx.json {tail} --trust-edited=yes", "--trust-edited")
case("pick-usage-edited", f"pick --target-ms 1 --lut {W}/lut/good.json --usage {W}/m/edited.onnx.json", EDITED)
case("pick-usage-other", f"pick --target-ms 1 --lut {W}/lut/good.json --usage {W}/m/other.onnx.json", OTHER)
case(
    "pick-results-edited",
    f"pick --target-ms 1 --results {W}/r/edited.jsonl",
    "edited.jsonl:1 was measured on an artifact",
)
case("report-edited", f"report {W}/r/edited.jsonl --out {W}/page.md", "edited.jsonl:1 was measured on an artifact")
case("report-trust-edited-value", f"report {W}/r/edited.jsonl --out {W}/page.md --trust-edited=no", "--trust-edited")
case("bench-trust-edited-threads", f"bench {W}/m/edited.onnx.json --quiet --trust-edited --threads 0", "'--threads'")

# --- train into a directory holding another run ---
case("train-out-holds-run", f"train --out {W}/oldrun --epochs 1", "already holds a run (metrics.jsonl)")
case("train-out-holds-run-recipe", f"train --recipe cpu-small --out {W}/oldrun", "--overwrite")
case("train-resume-and-overwrite", f"train --out {W}/oldrun --resume --overwrite", "give one of them")
case("train-overwrite-value", f"train --out {W}/new --overwrite=yes", "--overwrite")

# --- the group ---
case("unknown-command", "deploy", "deploy")
case("no-such-option", "--colour", "--colour")


def _snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("fuzz")
    _workspace(w)
    return w


@pytest.fixture(scope="module")
def snapshot(workspace) -> dict:
    return _snapshot(workspace)


def test_the_table_is_large_and_covers_every_subcommand():
    commands = {argv[0] for _, argv, _ in CASES}
    assert set(cli.commands) <= commands
    assert len(CASES) >= 150
    assert len({cid for cid, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,expect", [pytest.param(a, e, id=c) for c, a, e in CASES])
def test_bad_input_is_one_line_naming_it(argv, expect, workspace, snapshot, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("GATEKIT_OFFLINE", "1")
    monkeypatch.setenv("GATEKIT_DATA", str(workspace / "no-data-here"))
    args = [a.replace(W, str(workspace)) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    assert e.value.code not in (0, None), (out, err)
    assert "Traceback" not in out + err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert expect.replace(W, str(workspace)) in lines[0], lines[0]
    assert _snapshot(workspace) == snapshot, "a refused command created or changed a file"


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["train", "--out", "{ro}/run"], "--out"),
        (["eval", "{w}/ckpt/no_metadata", "--json", "{ro}/e.json"], "--json"),
        (["export", "{w}/ckpt/no_metadata", "--out", "{ro}/art"], "--out"),
        (["bench", "{w}/m/good.onnx.json", "--quiet", "--json", "{ro}/b.jsonl"], "--json"),
        (["report", "{w}/r/good.jsonl", "--out", "{ro}/page.md"], "--out"),
        (["pick", "--target-ms", "1", "--results", "{w}/r/good.jsonl", "--json", "{ro}/p.json"], "--json"),
        (["engine", "{w}/m/good.onnx.json", "--out", "{ro}"], "--out"),
        (["ops", "status", "--json", "{ro}/s.json"], "--json"),
        (["profile", "--out", "{ro}/lut.json"], "--out"),
    ],
)
def test_an_unwritable_directory_is_one_line(argv, flag, workspace, capsys, monkeypatch):
    """A read-only directory (os.access is faked: the suite may run as root, who can write anywhere)."""
    ro = workspace / "dir"
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK else real_access(p, mode, **kw)
    )
    with pytest.raises(SystemExit) as e:
        main([a.replace("{ro}", str(ro)).replace("{w}", str(workspace)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and flag in err and "not writable" in err, err
    assert list(ro.iterdir()) == []
