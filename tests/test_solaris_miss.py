"""solaris: the magazine-miss paths of kmem_cache_alloc / kmem_cache_free (seeds/002 L2178,
L2315), written out with kmem_depot_alloc / kmem_depot_free (L2084, L2116) inlined, follow the
seed's loop: checked against a plain model of that loop over random operation sequences on
1-round magazines (the 32 KiB magazine type, where most operations reach the depot)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from simrun import run_on

from policies.base import CacheSpec
from policies.solaris import SolarisPolicy
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP

PATHS = ("alloc.hit", "alloc.refill", "alloc.grow", "free.hit", "free.flush")


@dataclass
class SeedModel:
    """The seed's CPU layer and depot for one CPU: loaded / previous rounds (-1: none), the
    depot's full and empty magazine counts, their ml_alloc counts, and the histogram path
    each operation ends in."""

    magsize: int
    rounds: int = -1
    prounds: int = -1
    full: int = 0
    empty: int = 0
    full_alloc: int = 0
    empty_alloc: int = 0
    paths: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))

    def alloc(self) -> None:
        """kmem_cache_alloc's loop (L2185-2237)."""
        path = "alloc.hit"
        while True:
            if self.rounds > 0:
                self.rounds -= 1
                break
            if self.prounds > 0:
                self.rounds, self.prounds = self.prounds, self.rounds
                continue
            if self.full:
                self.full -= 1
                self.full_alloc += 1
                if self.prounds != -1:
                    self.empty += 1
                self.rounds, self.prounds = self.magsize, self.rounds
                path = "alloc.refill"
                continue
            path = "alloc.grow"
            break
        self.paths[path] += 1

    def free(self) -> None:
        """kmem_cache_free's loop (L2335-2412); a new magazine never fails here."""
        path = "free.hit"
        while True:
            if 0 <= self.rounds < self.magsize:
                self.rounds += 1
                break
            if self.prounds == 0:
                self.rounds, self.prounds = 0, self.rounds
                continue
            path = "free.flush"
            if self.empty:
                self.empty -= 1
                self.empty_alloc += 1
                if self.prounds != -1:
                    self.full += 1
                self.rounds, self.prounds = 0, self.rounds
                continue
            self.empty += 1  # kmem_cache_alloc of a magazine, kmem_depot_free to the empty list
        self.paths[path] += 1


def _setup(cpus: int = 1):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=cpus),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = SolarisPolicy(m)
    c = p.cache_create(CacheSpec("c32k", 32768))
    return m, p, c


def _state(c) -> tuple[int, ...]:
    ccp = c.cache_cpu[0]
    return (ccp.cc_rounds, ccp.cc_prounds, c.cache_full.ml_total, c.cache_empty.ml_total,
            c.cache_full.ml_alloc, c.cache_empty.ml_alloc)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1 << 16)), min_size=1, max_size=60))
def test_miss_paths_follow_the_seed_loop(ops):
    m, p, c = _setup()
    assert c.cache_cpu[0].cc_magsize == 1
    model = SeedModel(magsize=1)
    held: list[int] = []
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def body(t):
        for is_alloc, pick in ops:
            if is_alloc or not held:
                held.append((yield from p.alloc(t, c, KM_SLEEP)))
                model.alloc()
            else:
                yield from p.free(t, c, held.pop(pick % len(held)))
                model.free()
            seen.append((_state(c), (model.rounds, model.prounds, model.full, model.empty,
                                      model.full_alloc, model.empty_alloc)))
            p.check_invariants()

    run_on(m, 0, body, span=50_000_000)
    for got, want in seen:
        assert got == want
    p.fold_hits()
    assert {k: m.metrics.hist(k).count for k in PATHS} == model.paths
    # a single CPU never finds the depot lock taken
    assert c.cache_depot_contention == 0


def test_only_a_failed_depot_tryenter_of_a_miss_counts_as_contention():
    # two CPUs with loaded and previous magazines empty miss at the same instant: the first
    # takes cache_depot_lock with mutex_tryenter, the second fails it, waits with
    # mutex_enter and counts cache_depot_contention once (kmem_depot_alloc, L2094-2097);
    # the kmem_depot_free that follows each exchange waits without counting (L2118)
    m, p, c = _setup(cpus=2)
    held: dict[int, list[int]] = {0: [], 1: []}

    def allocs(t):
        for _ in range(4):
            held[t.cpu.id].append((yield from p.alloc(t, c, KM_SLEEP)))

    def frees(t):
        for b in held[t.cpu.id]:
            yield from p.free(t, c, b)
        held[t.cpu.id].clear()

    for body in (allocs, frees):
        for cpu in (0, 1):
            run_on(m, cpu, body, span=50_000_000)
    # each CPU: loaded and previous full, two full magazines of its frees in the depot
    assert c.cache_full.ml_total == 4 and c.cache_depot_contention == 0

    done = []

    def drain(t):
        cpu = t.cpu.id
        for _ in range(3):
            held[cpu].append((yield from p.alloc(t, c, KM_SLEEP)))
        done.append(cpu)

    for cpu in (0, 1):  # both start at the same instant
        m.spawn(f"drain{cpu}", drain, cpu=cpu)
    m.run(m.env.now + 50_000_000)
    assert sorted(done) == [0, 1]
    # two hits each, then one exchange each with the depot: full magazine out, empty in
    assert c.cache_full.ml_alloc == 2 and c.cache_empty.ml_total == 2
    assert c.cache_depot_contention == 1
    p.check_invariants()
