"""The training loop: in-memory uint8 images, batched augmentation on the device, LARS, warm-up cosine,
atomic per-epoch checkpoints with exact resume, a progress bar and a JSON-lines metrics log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gatekit.checkpoint import MODEL_FILE, STATE_FILE, load_model, load_state, save_model, save_state
from gatekit.data import load_dataset, normalization
from gatekit.errors import GatekitError
from gatekit.models.device import pick_device
from gatekit.train.augment import ViewAugmentation
from gatekit.train.config import TrainConfig
from gatekit.train.distributed import all_reduce_mean, convert_sync_batchnorm, init_distributed, shard
from gatekit.train.lars import LARS, parameter_groups, warmup_cosine
from gatekit.train.losses import bound_anneal
from gatekit.train.methods import SSLModel

METRICS_FILE = "metrics.jsonl"
RUN_FILES = (MODEL_FILE, STATE_FILE, METRICS_FILE)  # what makes a directory hold a run


def check_run_dir(out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """A new run goes into a directory that holds no other run, unless `resume` (continue it) or `overwrite`
    (start over); one line naming the directory and what it holds otherwise."""
    if resume and overwrite:
        raise GatekitError("--resume continues the run in --out and --overwrite starts it over: give one of them")
    if resume or overwrite:
        return
    found = [name for name in RUN_FILES if (Path(out_dir) / name).exists()]
    if found:
        raise GatekitError(
            f"--out {out_dir} already holds a run ({', '.join(found)}): pass --resume to continue it, "
            "or --overwrite to start over"
        )


def _prepare_run_dir(out_dir: Path, state: dict | None, overwrite: bool) -> None:
    """On the main process, before anything is written: temporary files of atomic writes that a killed run
    left are removed; a new run (--overwrite) removes the old run's files; a resumed run's metrics.jsonl keeps
    each epoch once (its latest line), up to the checkpoint's epoch, whose line is the checkpoint's own record."""
    from gatekit.atomic import remove_stale_temps, write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    if state is None:
        if overwrite:
            for name in RUN_FILES:
                (out_dir / name).unlink(missing_ok=True)
        return
    done = int(state["epoch"])
    path = out_dir / METRICS_FILE
    by_epoch: dict[int, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            epoch = rec.get("epoch") if isinstance(rec, dict) else None
            if isinstance(epoch, int) and 1 <= epoch <= done:
                by_epoch[epoch] = json.dumps(rec)  # a repeated epoch (a resume before this fix): the latest line
    try:
        own = json.loads(state.get("metrics", ""))
    except (TypeError, json.JSONDecodeError):
        own = None
    if isinstance(own, dict) and own.get("epoch") == done:
        by_epoch[done] = json.dumps(own)
    lines = [by_epoch[e] + "\n" for e in sorted(by_epoch)]
    if not path.is_file() or path.read_text(errors="replace") != "".join(lines):
        write_text(path, "".join(lines))


@dataclass
class TrainResult:
    out_dir: Path
    epochs_done: int
    summary: dict


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _init_encoder(backbone, cfg: TrainConfig) -> dict:
    """--init: the encoder's weights from a checkpoint of the same architecture; a pruned checkpoint's removed
    channels are held at zero (gatekit.train.torch_pruning). Returns the checkpoint's metadata."""
    from gatekit.train.torch_pruning import PRUNED_KEY, hold_removed_at_zero

    init, meta = load_model(cfg.init)
    if init.cfg.to_dict() != backbone.cfg.to_dict():
        raise GatekitError(
            f"--init {cfg.init} is a {init.cfg.to_dict()} encoder, not the {backbone.cfg.to_dict()} this "
            "run trains: give the same --width/--arch/--stem/--input-size/--gate-group"
        )
    backbone.load_state_dict(init.state_dict())
    if isinstance(meta.get(PRUNED_KEY), dict):
        hold_removed_at_zero(backbone, meta[PRUNED_KEY])
    return meta


def _fine_tune_meta(init_meta: dict, cfg: TrainConfig, epochs: int) -> dict:
    """A fine-tuned pruned checkpoint carries its `pruned` record, with the fine-tune's settings added."""
    from gatekit.train.torch_pruning import PRUNED_KEY

    record = init_meta.get(PRUNED_KEY)
    if not isinstance(record, dict):
        return {}
    fine_tune = {
        "from_sha256": init_meta.get("sha256"),
        "method": cfg.method,
        "epochs": epochs,
        "limit": cfg.limit,
        "lr": cfg.lr,
        "warmup_epochs": cfg.warmup_epochs,
    }
    return {PRUNED_KEY: dict(record, fine_tune=fine_tune)}


def train(
    cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> TrainResult:
    """Trains `cfg` into `out_dir`. With `resume`, continues exactly from out_dir/checkpoint.pt; with
    `overwrite`, starts over in a directory that holds another run (refused without one of them)."""
    out_dir = Path(out_dir)
    check_run_dir(out_dir, resume, overwrite)
    device = pick_device(cfg.device)
    info = init_distributed(device.type)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    state = None
    if resume:
        state = load_state(out_dir / STATE_FILE)
        saved = TrainConfig.from_dict(json.loads(state["config"]))
        if saved.to_dict() | {"epochs": cfg.epochs} != cfg.to_dict() | {"epochs": cfg.epochs}:
            diff = sorted(k for k, v in cfg.to_dict().items() if saved.to_dict().get(k) != v and k != "epochs")
            raise GatekitError(f"cannot resume: settings differ from the checkpoint's ({', '.join(diff)})")

    data = load_dataset(cfg.dataset, cfg.split, cfg.data_dir, limit=cfg.limit)
    images = torch.from_numpy(np.ascontiguousarray(data.images)).to(device)
    model_cfg = cfg.model_config()
    global_batch = cfg.batch_size * info.world_size
    steps_per_epoch = len(images) // global_batch
    if steps_per_epoch < 1:
        raise GatekitError(f"{len(images)} images is fewer than one global batch of {global_batch}")

    torch.manual_seed(cfg.seed + info.rank)
    model = SSLModel(model_cfg, cfg.method, cfg.loss_config(), cfg.proj_hidden, cfg.proj_out)
    if info.enabled:
        model = convert_sync_batchnorm(model, device.type)
    model.to(device)
    base_lr = cfg.lr * global_batch / 256
    optimizer = LARS(
        parameter_groups(model, cfg.weight_decay, cfg.gate_lr_mult),
        lr=base_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        eta=cfg.lars_eta,
    )
    init_meta = _init_encoder(model.backbone, cfg) if cfg.init else {}
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        _set_rng_state(state["rng"], device)
    ddp_model: torch.nn.Module = model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.method != "vicreg-dual",
        )

    mean, std = normalization(cfg.dataset)
    size = model_cfg.input_size
    augs = [
        ViewAugmentation(size, mean, std, min_scale=cfg.min_scale, blur_p=p, solarize_p=cfg.solarize_p).to(device)
        for p in cfg.blur_p
    ]
    local_aug = None
    if cfg.local_views:
        local_aug = ViewAugmentation(
            cfg.local_crop_size(),
            mean,
            std,
            min_scale=cfg.local_scale[0],
            max_scale=cfg.local_scale[1],
            blur_p=cfg.blur_p[0],
            solarize_p=cfg.solarize_p,
        ).to(device)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if state is not None and use_amp and "scaler" in state:
        scaler.load_state_dict(state["scaler"])

    if info.is_main:
        _prepare_run_dir(out_dir, state, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / METRICS_FILE
    summary: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        p = bound_anneal(epoch, cfg.alpha)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        model.train()
        sums = {"loss": 0.0, "vicreg": 0.0, "budget": 0.0, "flops_kept": 0.0}
        t0 = time.perf_counter()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (progress and info.is_main),
            dynamic_ncols=True,
            leave=True,
        )
        for step in bar:
            lr = warmup_cosine(
                epoch + step / steps_per_epoch,
                base_lr=base_lr,
                warmup_epochs=cfg.warmup_epochs,
                total_epochs=cfg.epochs,
                start_lr=cfg.warmup_start_lr,
            )
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)
            idx = shard(order[step * global_batch : (step + 1) * global_batch], info).to(device)
            batch = images[idx]
            v1, v2 = augs[0](batch), augs[1](batch)
            local_views = [local_aug(batch) for _ in range(cfg.local_views)] if local_aug is not None else None
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = ddp_model(v1, v2, p, local_views)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise GatekitError(f"loss became {loss.item()} at epoch {epoch + 1} step {step + 1}: lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for k in sums:
                sums[k] += float(out[k].detach())
            done = (step + 1) * global_batch
            bar.set_postfix(
                loss=f"{sums['loss'] / (step + 1):.3f}",
                flops=f"{sums['flops_kept'] / (step + 1):.3f}",
                img_s=f"{done / (time.perf_counter() - t0):.0f}",
                lr=f"{lr:.3g}",
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        averaged = all_reduce_mean(torch.tensor([sums[k] / steps_per_epoch for k in sums], dtype=torch.float64), info)
        record = {k: float(v) for k, v in zip(sums, averaged)}
        record.update(
            epoch=epoch + 1,
            lr=lr,
            bound_p=p,
            seconds=seconds,
            images_per_s=steps_per_epoch * global_batch / seconds,
            images_seen=(epoch + 1) * steps_per_epoch * global_batch,
        )
        if info.is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            save_model(
                out_dir / MODEL_FILE,
                model.backbone,
                {
                    "train_config": cfg.to_dict(),
                    "epoch": epoch + 1,
                    "method": cfg.method,
                    "budget": cfg.budget,
                    **_fine_tune_meta(init_meta, cfg, epoch + 1),
                },
            )
            state_out = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "rng": _rng_state(device),
                "config": json.dumps(cfg.to_dict()),
                "metrics": json.dumps(record),
            }
            if use_amp:
                state_out["scaler"] = scaler.state_dict()
            save_state(out_dir / STATE_FILE, state_out)
        summary = {
            "method": cfg.method,
            "budget": cfg.budget,
            "epochs": epoch + 1,
            "loss": record["loss"],
            "vicreg_loss": record["vicreg"],
            "budget_loss": record["budget"],
            "flops_kept": record["flops_kept"] if cfg.method != "vicreg" else 1.0,
            "flops_kept_note": "training batches, noisy gates; `gatekit eval` measures it in eval mode on the test set",
            "images_per_s": record["images_per_s"],
            "seconds": seconds,
            "world_size": info.world_size,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "out_dir": str(out_dir),
        }
    if not summary:  # resumed a finished run
        summary = {"epochs": start_epoch, "note": "already trained to the requested epochs"}
    if info.enabled:
        torch.distributed.barrier()
    return TrainResult(out_dir, cfg.epochs, summary)
