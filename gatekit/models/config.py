"""The architecture description that travels with every checkpoint and artifact."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from gatekit.errors import GatekitError
from gatekit.models.arch import ARCH_LAYERS, STEMS, Architecture, stage_widths


@dataclass(frozen=True)
class ModelConfig:
    """A gated ResNet. `width` scales every stage; `gate_group` channels share one gate decision."""

    arch: str = "resnet18"
    width: float = 1.0
    stem: str = "cifar"  # cifar: 3x3/1 conv, no max-pool. imagenet: 7x7/2 conv + 3x3/2 max-pool.
    stem_padding: int | None = None  # cifar default 2 (the paper's), imagenet default 3
    input_size: int = 32
    gate_group: int = 1
    gate_reduction: int = 4
    gate_tau: float = 2.0 / 3.0

    def __post_init__(self) -> None:
        if self.arch not in ARCH_LAYERS:
            raise GatekitError(f"unknown architecture {self.arch!r}: choose one of {', '.join(ARCH_LAYERS)}")
        if self.stem not in STEMS:
            raise GatekitError(f"unknown stem {self.stem!r}: choose one of {', '.join(STEMS)}")
        if not 0 < self.width <= 4:
            raise GatekitError(f"width must be in (0, 4], got {self.width}")
        if self.gate_group < 1:
            raise GatekitError(f"gate_group must be >= 1, got {self.gate_group}")
        if self.input_size < 8:
            raise GatekitError(f"input_size must be >= 8, got {self.input_size}")
        for w in self.widths:
            if w % self.gate_group:
                raise GatekitError(
                    f"gate_group {self.gate_group} does not divide the stage width {w} "
                    f"(arch {self.arch}, width {self.width}): widths are {list(self.widths)}"
                )

    @property
    def architecture(self) -> Architecture:
        """The structure (stages, strides, feature-map sizes, MACs per block) at this config's input size:
        layers, widths, padding and the rest come from there."""
        return Architecture(self.arch, self.width, self.stem, self.stem_padding, self.input_size)

    @property
    def layers(self) -> tuple[int, ...]:
        return self.architecture.layers

    @property
    def widths(self) -> tuple[int, ...]:
        return stage_widths(self.width)

    @property
    def padding(self) -> int:
        return self.architecture.padding

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return from_known_fields(cls, d, "model config keys")


def from_known_fields(cls, d: dict, what: str):
    """A dataclass from a dict, refusing keys it does not know (a checkpoint or recipe from elsewhere) and
    values of the wrong type (`epochs = "three"`), each in one line that names the key."""
    check_fields(cls, d, what)
    return cls(**d)


def check_fields(cls, d, what: str, where: str | None = None) -> None:
    """GatekitError unless `d` is a dict of `cls`'s fields with values of their types; `where` (a file)
    starts the message."""
    at = f"{where}: " if where else ""
    if not isinstance(d, dict):
        raise GatekitError(f"{at}{what.removesuffix(' keys')}: expected a table of settings, got {type(d).__name__}")
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise GatekitError(f"{at}unknown {what}: {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        if not _matches(value, hints[name]):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise GatekitError(
                f"{at}bad {name} in {what.removesuffix(' keys')}: expected {_type_name(hints[name])}, got {shown}"
            )


def _matches(value, tp) -> bool:
    """Whether a value read from TOML or JSON fits a field's annotation (int, float, str, bool, None, lists
    and unions of these; anything else is not checked). An int is a float; a bool is not a number."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "none"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    return getattr(tp, "__name__", str(tp))
