"""`size_classes`: many caches at once, the way ZFS uses the SPL: a `zio_buf_<size>` cache per
size class from `min_size` to `max_size` (the classes of zio_init: every 512 bytes up to 4 KiB,
then four classes per power of two), created by the workload at start (kmem_cache_create at
module load), and a size distribution over them. Each thread keeps `live_objects` alive with
lifetimes from `lifetime`, drawing each allocation's class from `size_dist`:

- `uniform`: every class equally likely;
- `zipf`: class k (smallest first) with weight 1 / (k + 1) ^ `zipf_s` (small buffers common,
  large ones rare, like metadata vs. data blocks);
- `bytes_uniform`: the class of a size drawn uniformly in [min_size, max_size].
"""

from __future__ import annotations

import bisect
import heapq
from typing import Any, Literal

from pydantic import Field, model_validator

from simcore.cpu import Gen, Thread
from simcore.flags import NAMES
from simcore.units import Duration, Size
from workloads.base import Workload, WorkloadParams
from workloads.lifetimes import Lifetime


def zio_sizes(min_size: int, max_size: int) -> list[int]:
    """zio_init's buffer classes between the bounds: multiples of 512 up to 4 KiB, then four
    per power of two (p, 1.25p, 1.5p, 1.75p)."""
    out = []
    size = 512
    while size <= max_size:
        if size >= min_size:
            out.append(size)
        if size < 4096:
            size += 512
        else:
            p2 = 1 << (size.bit_length() - 1)
            size += p2 // 4
    return out


class SizeClassesParams(WorkloadParams):
    prefix: str = Field(default="zio_buf_", description="cache name prefix (name = prefix+size)")
    min_size: Size = Field(default=512, ge=8, description="smallest class, bytes")
    max_size: Size = Field(default=131072, ge=8, description="largest class, bytes (16MiB: all)")
    size_dist: Literal["uniform", "zipf", "bytes_uniform"] = Field(
        default="zipf", description="how an allocation's class is drawn")
    zipf_s: float = Field(default=1.0, gt=0, description="zipf exponent")
    cpus: list[int] = Field(default_factory=list, description="CPUs to run on (empty = all)")
    live_objects: int = Field(default=32, gt=0, description="target live objects per thread")
    lifetime: Lifetime = Field(default_factory=lambda: Lifetime(dist="exponential", mean=50_000),
                               description="object lifetime distribution")
    think: Duration = Field(default=200, ge=0, description="CPU work between two operations")
    flags: str = Field(default="KM_SLEEP", pattern="^(KM_SLEEP|KM_NOSLEEP|KM_PUSHPAGE|KM_NOFS)$",
                       description="allocation flags")

    @model_validator(mode="after")
    def _bounds(self) -> SizeClassesParams:
        if not zio_sizes(self.min_size, self.max_size):
            raise ValueError("no size class between min_size and max_size")
        return self


class SizeClasses(Workload):
    """A zio_buf-style family of caches with a size distribution over them."""

    kind = "size_classes"
    summary = "many caches at once (zio_buf_512 .. zio_buf_16M) with a size distribution"
    Params = SizeClassesParams

    @classmethod
    def creates(cls, params: SizeClassesParams) -> list[str]:
        return [f"{params.prefix}{s}" for s in zio_sizes(params.min_size, params.max_size)]

    def create_caches(self) -> None:
        """kmem_cache_create of every class not already in the experiment (zio_init)."""
        p: SizeClassesParams = self.params
        self.sizes = zio_sizes(p.min_size, p.max_size)
        for size in self.sizes:
            self.ensure_cache(f"{p.prefix}{size}", size)

    def start(self) -> None:
        p: SizeClassesParams = self.params
        self.class_caches = [self.caches[f"{p.prefix}{s}"] for s in self.sizes]
        if p.size_dist == "uniform":
            weights = [1.0] * len(self.sizes)
        elif p.size_dist == "zipf":
            weights = [1.0 / (k + 1) ** p.zipf_s for k in range(len(self.sizes))]
        else:
            weights = []
            lo = p.min_size
            for s in self.sizes:
                weights.append(max(0, min(s, p.max_size) - lo + 1))
                lo = s + 1
        total = sum(weights)
        run = 0.0
        self.cum: list[float] = []
        for w in weights:
            run += w / total
            self.cum.append(run)
        self.cum[-1] = 1.0
        self.per_class = [0] * len(self.sizes)
        """Allocations per class (all threads)."""
        self._flags = NAMES[p.flags]
        for cpu in p.cpus or range(self.machine.ncpus):
            self.spawn(f"{self.label}/{cpu}", self._thread, cpu=cpu)

    def _thread(self, t: Thread) -> Gen:
        p: SizeClassesParams = self.params
        rng = self.machine.rng(t.name)
        lifetime = p.lifetime.sampler(rng)
        live: list[tuple[int, int, int, Any]] = []
        seq = 0
        cum, caches, flags = self.cum, self.class_caches, self._flags
        while True:
            now = t.now
            if live and live[0][0] <= now:
                _d, _s, obj, cache = heapq.heappop(live)
                yield from self.free(t, cache, obj)
            elif len(live) < p.live_objects:
                k = min(bisect.bisect_right(cum, rng.random()), len(cum) - 1)
                self.per_class[k] += 1
                obj = yield from self.alloc(t, caches[k], flags)
                if obj is not None:
                    seq += 1
                    heapq.heappush(live, (t.now + lifetime(), seq, obj, caches[k]))
            else:
                yield from t.sleep(max(1, live[0][0] - now))
                continue
            if p.think:
                t.charge_ns(p.think)
            yield from t.checkpoint()
