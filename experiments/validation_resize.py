"""Check 3 of `kmemsim validate`: illumos magazine resizing at the real 15 s kmem_update
(Bonwick & Adams 2001, section 3.6; seed 002 kmem.c, kmem_cache_update L2928-2949 and
kmem_cache_magazine_resize L2829).

The workload is a request pipeline over every CPU, at a rate well below saturation so that
the CPUs are mostly idle: requests arrive on each CPU as a Poisson process; a request
allocates `batch` buffers from one kmem_alloc cache and frees the buffers the previous CPU of
the ring allocated for its own requests since then (a hand-over from one CPU to the next, as
in a network stack whose receive and processing run on different CPUs). Every buffer is thus
allocated on one CPU and freed on another, so each CPU's magazines only ever empty (allocs) or
fill (frees) and go to the depot once every M operations: the depot traffic that the resize
rule exists for.

The run observes, at each kmem_cache_update of the cache, the failed depot try-locks since
the previous update (the value the rule compares with kmem_depot_contention), the magazine
size, and whether a resize followed, without changing what the update does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from policies.solaris.update import int32
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP
from simcore.metrics import SamplingConfig

S = 1_000_000_000


@dataclass
class Update:
    """One kmem_cache_update of the observed cache."""

    time_ns: int
    contention: int
    """cache_depot_contention when the update read it (the raw counter)."""
    rule_delta: int
    """int32(contention - contention_prev): what kmem_cache_update compares with
    kmem_depot_contention (hugely negative in the interval after a resize)."""
    magsize: int
    """Magazine size when the update ran."""
    resizes: int
    """The cache's resize count when the update ran."""
    needs_resize: bool
    """The seed's rule: rule_delta > kmem_depot_contention and chunksize < mt_maxbuf."""


@dataclass
class ResizeRun:
    """What one CPU count's run produced."""

    cpus: int
    updates: list[Update] = field(default_factory=list)
    resizes: int = 0
    threshold: int = 3
    """kmem_depot_contention of the run."""
    final_magsize: int = 0
    allocs: int = 0
    start_magsize: int = 0
    magsizes: list[int] = field(default_factory=list)
    """The magazine-type table's sizes (kmem_magtype), in order."""

    def rates(self) -> list[tuple[float, float]]:
        """(interval end in s, failed depot try-locks per second in the interval)."""
        out, prev_t, prev_c = [], 0, 0
        for u in self.updates:
            out.append((u.time_ns / S, (u.contention - prev_c) * S / (u.time_ns - prev_t)))
            prev_t, prev_c = u.time_ns, u.contention
        return out

    def sizes_after(self) -> list[int]:
        """The magazine size after each update's resize (if any) ran."""
        return [u.magsize for u in self.updates[1:]] + [self.final_magsize]

    def window_rate(self, intervals: int) -> float:
        """Failed try-locks per second over the last `intervals` update intervals."""
        last = self.updates[-1]
        first = self.updates[-1 - intervals]
        return (last.contention - first.contention) * S / (last.time_ns - first.time_ns)

    def window_resizes(self, intervals: int) -> int:
        """Resizes that completed within the last `intervals` update intervals."""
        return self.updates[-1].resizes - self.updates[-1 - intervals].resizes

    def rule_breaks(self) -> int:
        """Updates after which the cache did not do what kmem.c's rule says: resize (one row
        of the magazine-type table up) exactly when the update found more than
        kmem_depot_contention failed try-locks, and never in the interval after a resize."""
        breaks = 0
        for u, nxt in zip(self.updates, self.updates[1:], strict=False):
            resized = nxt.resizes - u.resizes
            if resized != int(u.needs_resize):
                breaks += 1
            elif resized and nxt.magsize != self.magsizes[self.magsizes.index(u.magsize) + 1]:
                breaks += 1
        return breaks


def run_pipeline(cpus: int, prm: dict[str, Any], seed: int) -> ResizeRun:
    """Run the request pipeline on `cpus` CPUs for prm["duration_s"] simulated seconds with
    the solaris policy at its defaults (kmem_reap_interval 15 s, kmem_depot_contention 3)."""
    from policies.solaris import SolarisPolicy

    m = Machine(MachineConfig(nodes=1, cpus_per_node=cpus), seed=seed,
                memory_config=MemoryConfig(total_bytes=prm["memory_bytes"]),
                sampling=SamplingConfig(interval=S))
    p = SolarisPolicy(m, {})
    cp = p.kmem_alloc_class(prm["object_size"])
    p.start()
    out = ResizeRun(cpus, start_magsize=cp.cache_magtype.mt_magsize,
                    magsizes=[mt.mt_magsize for mt in p.kmem_magtype])
    threshold = out.threshold = p.tun["kmem_depot_contention"]
    update = p.kmem_cache_update

    def observed(t: Any, c: Any) -> Iterator[Any]:
        """kmem_cache_update, unchanged; for the observed cache, note what it compared."""
        if c is not cp:
            yield from update(t, c)
            return
        before = c.cache_depot_contention_prev
        magsize, resizes = c.cache_magtype.mt_magsize, c.resizes
        maxbuf = c.cache_magtype.mt_maxbuf
        yield from update(t, c)
        read = c.cache_depot_contention_prev   # the counter the update compared
        delta = int32(read - before)
        out.updates.append(Update(t.now, read, delta, magsize, resizes,
                                  delta > threshold and c.chunksize < maxbuf))

    p.kmem_cache_update = observed  # type: ignore[method-assign]
    end = int(prm["duration_s"] * S)
    gap, batch = prm["arrival_mean_ns"], prm["batch"]
    inbox: list[deque[int]] = [deque() for _ in range(cpus)]
    alloc_fast, free_fast = p.alloc_fast, p.free_fast

    def cpu_body(i: int) -> Any:
        def body(t: Any) -> Iterator[Any]:
            rng = m.rng(f"pipeline/{i}")
            nxt, mine = inbox[(i + 1) % cpus], inbox[i]
            while True:
                yield from t.sleep(int(rng.exponential(gap)) + 1)
                if t.now >= end:
                    return
                for _ in range(batch):
                    obj = alloc_fast(t, cp, KM_SLEEP)
                    if obj is None:
                        obj = yield from p.alloc(t, cp, KM_SLEEP)
                    nxt.append(obj)
                    out.allocs += 1
                while mine:
                    obj = mine.popleft()
                    if not free_fast(t, cp, obj):
                        yield from p.free(t, cp, obj)
        return body

    for i in range(cpus):
        m.spawn(f"pipeline/{i}", cpu_body(i), cpu=i)
    m.run(end)
    out.resizes = cp.resizes
    out.final_magsize = cp.cache_magtype.mt_magsize
    return out
