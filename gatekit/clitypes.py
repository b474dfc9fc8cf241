"""Click parameter types of the command line: every flag is checked where it is parsed, and click's
message names the flag ("Invalid value for '--threads': 0 is not in the range x>=1.")."""

from __future__ import annotations

import math
import re

import click


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare false against every bound)."""

    name = "float"

    def convert(self, value, param, ctx):
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(rv, param, ctx)


def count(minimum: int = 1) -> click.IntRange:
    return click.IntRange(min=minimum)


POSITIVE = FiniteFloatRange(min=0, min_open=True)  # > 0 and finite
NON_NEGATIVE = FiniteFloatRange(min=0)  # >= 0 and finite
FRACTION = FiniteFloatRange(0, 1, min_open=True)  # (0, 1]: budgets
UNIT = FiniteFloatRange(0, 1)  # [0, 1]: usage thresholds, cosines
WIDTH = FiniteFloatRange(0, 4, min_open=True)  # width multipliers (ModelConfig allows (0, 4])


class TorchDevice(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps (what gatekit.models.device.pick_device hands to torch)."""

    name = "device"
    _pattern = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if not self._pattern.match(text):
            self.fail(f"{value!r} is not a device: choose auto, cpu, cuda, cuda:N or mps.", param, ctx)
        return text


class IntList(click.ParamType):
    """A comma list of integers, each at least `minimum` ("1,2" -> [1, 2])."""

    name = "ints"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            items = list(value)
        else:
            parts = [p.strip() for p in str(value).split(",") if p.strip()]
            try:
                items = [int(p) for p in parts]
            except ValueError:
                self.fail(f"takes integers separated by commas, e.g. 1,2; got {value!r}.", param, ctx)
        if not items:
            self.fail(f"takes at least one integer, e.g. 1,2; got {value!r}.", param, ctx)
        bad = [i for i in items if i < self.minimum]
        if bad:
            self.fail(f"{bad[0]} is below {self.minimum} (in {value!r}).", param, ctx)
        return items


DEVICE = TorchDevice()
