"""Named, independently seeded random streams with buffered draws.

Each component asks the machine for its own stream by name; the stream's seed is derived from
the run seed and the name, so adding a component never changes another component's draws.
Draws are taken from pre-generated numpy blocks: a scalar numpy call costs ~1 us of wall time,
a buffered draw ~0.1 us.
"""

from __future__ import annotations

import zlib

import numpy as np

_BLOCK = 4096


class RandomStream:
    """A seeded `numpy.random.Generator` plus buffered uniform and exponential draws."""

    def __init__(self, seed: int, name: str) -> None:
        self.name = name
        """The stream's name (its identity within the run)."""
        ss = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
        self.gen = np.random.default_rng(ss)
        """The underlying generator, for vectorised draws."""
        self._u: list[float] = []
        self._e: list[float] = []

    def random(self) -> float:
        """Uniform in [0, 1)."""
        if not self._u:
            self._u = self.gen.random(_BLOCK).tolist()
            self._u.reverse()
        return self._u.pop()

    def exponential(self, mean: float) -> float:
        """Exponential with the given mean."""
        if not self._e:
            self._e = self.gen.standard_exponential(_BLOCK).tolist()
            self._e.reverse()
        return self._e.pop() * mean

    def exponential_block(self, mean: float) -> list[int]:
        """The next buffered exponential draws (at least one), each as `int(exponential(mean))`
        would return it, in reverse order (pop from the end): the same values in the same
        order as that many `exponential` calls. The buffer is emptied."""
        draws = (self.gen.standard_exponential(_BLOCK)[::-1] if not self._e
                 else np.array(self._e))
        self._e = []
        # numpy's float64 product and its cast to int64 (truncation toward zero) are Python's
        # `e * mean` and `int()`, exactly, while the product stays below 2**63 (a standard
        # exponential draw of 4096 stays below about 50: means up to ~5 years of ns)
        return (draws * mean).astype(np.int64).tolist()

    def integers(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        return int(self.random() * n)

    def choice_index(self, cum_weights: list[float]) -> int:
        """Index drawn with probabilities given as a cumulative list ending in 1.0."""
        u = self.random()
        for i, c in enumerate(cum_weights):
            if u < c:
                return i
        return len(cum_weights) - 1
