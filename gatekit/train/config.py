"""Training configuration: recipe files (TOML, `--recipe NAME|PATH`) with CLI flags on top."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from gatekit.errors import GatekitError
from gatekit.models import ModelConfig
from gatekit.models.config import check_fields, from_known_fields
from gatekit.train.methods import METHODS, LossConfig

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
DATASET_DEFAULTS = {  # stem and crop size per dataset (docs/method.md sections 1 and 6)
    "cifar10": ("cifar", 32),
    "cifar100": ("cifar", 32),
    "stl10": ("imagenet", 96),
    "imagenet100": ("imagenet", 224),
    "imagefolder": ("imagenet", 224),
    "npz": ("cifar", 32),
}


@dataclass
class TrainConfig:
    # data
    dataset: str = "cifar10"
    data_dir: str | None = None
    split: str = "train"
    limit: int | None = None
    # model
    arch: str = "resnet18"
    width: float = 1.0
    stem: str | None = None  # default per dataset
    stem_padding: int | None = None
    input_size: int | None = None  # default per dataset
    gate_group: int = 1
    # method and objective
    method: str = "vicreg-dual"
    budget: float = 0.3
    lam: float = 5.0
    gamma: float = 1.0
    alpha: float = 0.02
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    proj_hidden: int = 2048
    proj_out: int = 2048
    # optimisation
    epochs: int = 500
    batch_size: int = 256  # per process
    lr: float = 0.3  # per 256 images; scaled by global batch / 256
    warmup_epochs: float = 10.0
    warmup_start_lr: float = 0.003
    weight_decay: float = 1e-4
    momentum: float = 0.9
    lars_eta: float = 0.02
    gate_lr_mult: float = 1.0  # the gates' learning rate over the rest (1 = the paper); >1 only for short budget runs
    # augmentation
    min_scale: float = 0.2
    blur_p: list[float] = field(default_factory=lambda: [0.0, 0.0])  # view 1, view 2
    solarize_p: float = 0.1
    # local views (Tan et al., ICLR 2023); 0 = the paper's two views
    local_views: int = 0
    local_size: int | None = None  # default: input_size * 128 / 224 (18 px on CIFAR)
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.3])
    global_weight: float = 0.4
    # run
    seed: int = 5
    device: str = "auto"
    amp: bool = True  # fp16 autocast on CUDA; ignored on CPU
    threads: int | None = None
    recipe: str | None = None
    # fine-tuning: start the encoder from this checkpoint (the projector starts fresh); a pruned checkpoint's
    # removed channels stay removed (gatekit.train.torch_pruning)
    init: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise GatekitError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.dataset not in DATASET_DEFAULTS:
            raise GatekitError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_DEFAULTS)}")
        if not 0 < self.budget <= 1:
            raise GatekitError(f"budget must be in (0, 1], got {self.budget}")
        if self.epochs < 1 or self.batch_size < 2:
            raise GatekitError("epochs must be >= 1 and batch size >= 2")
        if self.local_views < 0 or len(self.local_scale) != 2 or not 0 < self.global_weight <= 1:
            raise GatekitError("local_views must be >= 0, local_scale two values, global_weight in (0, 1]")
        if len(self.blur_p) != 2:
            raise GatekitError(f"blur_p needs two values (view 1, view 2), got {self.blur_p}")
        self.model_config()  # validates arch, width and gate_group early

    def model_config(self) -> ModelConfig:
        stem, size = DATASET_DEFAULTS[self.dataset]
        return ModelConfig(
            arch=self.arch,
            width=self.width,
            stem=self.stem or stem,
            stem_padding=self.stem_padding,
            input_size=self.input_size or size,
            gate_group=self.gate_group,
        )

    def loss_config(self) -> LossConfig:
        return LossConfig(
            self.budget, self.lam, self.gamma, self.sim_weight, self.var_weight, self.cov_weight, self.global_weight
        )

    def local_crop_size(self) -> int:
        return self.local_size or max(8, round(self.model_config().input_size * 128 / 224))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return from_known_fields(cls, d, "training settings")


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(name_or_path: str) -> dict:
    """A recipe by name (gatekit/recipes/NAME.toml) or by path to a TOML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise GatekitError(
            f"recipe {name_or_path!r} not found: choose one of {', '.join(list_recipes())} or give a .toml path"
        )
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GatekitError(f"recipe {path} is not valid TOML: {e}") from None
    check_fields(TrainConfig, values, "training settings", where=f"recipe {path}")
    return values


def build_config(recipe: str | None, overrides: dict) -> TrainConfig:
    """Recipe values, then every override that is not None."""
    values = load_recipe(recipe) if recipe else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if recipe:
        values["recipe"] = recipe
    return TrainConfig.from_dict(values)
