"""solaris: conservation (objects in slabs + loaded/previous magazines + depot + callers'
hands = buffers constructed or free in slabs) and the previous-magazine invariant after every
step of random multi-CPU alloc / free / reap / update sequences (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import CacheSpec
from policies.solaris import SolarisPolicy
from simcore import Machine, MachineConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP

ops = st.lists(st.tuples(st.integers(0, 2),
                         st.sampled_from(["alloc", "burst", "nosleep", "free", "freeburst",
                                          "reap_now", "kmem_reap", "update", "resize"]),
                         st.integers(0, 1), st.integers(0, 10_000)),
               min_size=1, max_size=40)


def _counted(p: SolarisPolicy, c, mine: list[int]) -> None:
    p.check_invariants()
    ks = p.stats(c).extra
    in_slabs = c.cache_bufslab
    mags = 0
    for ccp in c.cache_cpu:
        mags += max(ccp.cc_rounds, 0) + max(ccp.cc_prounds, 0)
        ms = ccp.cc_magsize
        assert ccp.cc_prounds in (-1, 0, ms)  # the previous magazine is full or empty
    depot = c.cache_full.ml_total * c.cache_magtype.mt_magsize
    assert ks["buf_inuse"] == len(mine) == len(set(mine))
    assert mags + depot == ks["buf_constructed"]
    assert in_slabs + ks["buf_constructed"] + len(mine) == ks["buf_total"]


@settings(max_examples=40, deadline=None)
@given(ops)
def test_conservation_after_every_step(seq):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=3))
    p = SolarisPolicy(m, {"kmem_reap_interval": 2})
    caches = [p.cache_create(CacheSpec("c64", 64)), p.cache_create(CacheSpec("c4k", 4096))]
    held: list[list[int]] = [[], []]
    for cpu, op, ci, k in seq:
        c = caches[ci]

        def body(t, op=op, c=c, ci=ci, k=k):
            if op in ("alloc", "nosleep", "burst"):
                for _ in range(40 if op == "burst" else 1):
                    obj = yield from p.alloc(t, c, KM_NOSLEEP if op == "nosleep" else KM_SLEEP)
                    if obj is not None:
                        held[ci].append(obj)
            elif op in ("free", "freeburst") and held[ci]:
                for _ in range(min(len(held[ci]), 40 if op == "freeburst" else 1)):
                    yield from p.free(t, c, held[ci].pop(k % len(held[ci])))
            elif op == "reap_now":
                yield from p.reap(t, c)
            elif op == "kmem_reap":
                yield from p.kmem_reap(t)
            elif op == "update":
                yield from p.kmem_update(t)
            elif op == "resize":
                yield from p.kmem_cache_magazine_resize(t, c)

        m.spawn(f"s{m.env.now}", body, cpu=cpu)
        m.run(m.env.now + 100_000_000)
        for c, mine in zip(caches, held, strict=True):
            _counted(p, c, mine)
