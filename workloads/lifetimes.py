"""Object lifetime (and inter-arrival) distributions for workload generators.

In an experiment file a distribution is a table: `{dist = "exponential", mean = "20us"}`,
`{dist = "fixed", value = "5us"}`, `{dist = "uniform", min = "1us", max = "9us"}`,
`{dist = "lognormal", mean = "20us", sigma = 1.0}` (mean of the distribution, not of its log),
`{dist = "pareto", min = "1us", alpha = 1.5}` (heavy tail: a few objects live very long).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simcore.rand import RandomStream
from simcore.units import Duration


class Lifetime(BaseModel):
    """A distribution of durations in ns."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dist: Literal["exponential", "fixed", "uniform", "lognormal", "pareto"] = "exponential"
    mean: Duration | None = Field(default=None, gt=0)
    value: Duration | None = Field(default=None, ge=0)
    min: Duration | None = Field(default=None, ge=0)
    max: Duration | None = Field(default=None, gt=0)
    sigma: float = Field(default=1.0, gt=0)
    alpha: float = Field(default=1.5, gt=1.0)

    @model_validator(mode="after")
    def _needs(self) -> Lifetime:
        need = {"exponential": ("mean",), "fixed": ("value",), "uniform": ("min", "max"),
                "lognormal": ("mean",), "pareto": ("min",)}[self.dist]
        for key in need:
            if getattr(self, key) is None:
                raise ValueError(f"{self.dist} distribution needs '{key}'")
        if self.dist == "uniform" and self.max < self.min:  # type: ignore[operator]
            raise ValueError("uniform distribution needs min <= max")
        return self

    @property
    def expected(self) -> float:
        """Mean of the distribution, ns."""
        if self.dist in ("exponential", "lognormal"):
            return float(self.mean)  # type: ignore[arg-type]
        if self.dist == "fixed":
            return float(self.value)  # type: ignore[arg-type]
        if self.dist == "uniform":
            return (self.min + self.max) / 2  # type: ignore[operator]
        return self.alpha * self.min / (self.alpha - 1)  # type: ignore[operator]

    def blocks(self, rng: RandomStream) -> Callable[[], list[int]]:
        """A function returning the next draws (at least one) as a list to pop from the end:
        popping them one by one gives exactly the durations `sampler` would draw. Exponential
        and fixed lifetimes come in blocks (a draw is then one list pop); the others one at a
        time, since their uniform draws share the stream with other uses."""
        if self.dist == "exponential":
            mean = float(self.mean)  # type: ignore[arg-type]
            return lambda: rng.exponential_block(mean)
        if self.dist == "fixed":
            block = [int(self.value)] * 4096  # type: ignore[arg-type]
            return lambda: block.copy()
        one = self.sampler(rng)
        return lambda: [one()]

    def sampler(self, rng: RandomStream):  # type: ignore[no-untyped-def]
        """A zero-argument function drawing one duration (int ns) from `rng`."""
        if self.dist == "exponential":
            mean = float(self.mean)  # type: ignore[arg-type]
            return lambda: int(rng.exponential(mean))
        if self.dist == "fixed":
            v = int(self.value)  # type: ignore[arg-type]
            return lambda: v
        if self.dist == "uniform":
            lo, span = self.min, self.max - self.min  # type: ignore[operator]
            return lambda: int(lo + rng.random() * span)
        if self.dist == "lognormal":
            s = self.sigma
            mu = math.log(float(self.mean)) - s * s / 2  # type: ignore[arg-type]
            gen = rng.gen
            block: list[float] = []

            def draw() -> int:
                if not block:
                    block.extend(gen.lognormal(mu, s, 4096).tolist())
                return int(block.pop())
            return draw
        xm, a = float(self.min), self.alpha  # type: ignore[arg-type]
        return lambda: int(xm / (1.0 - rng.random()) ** (1.0 / a))
