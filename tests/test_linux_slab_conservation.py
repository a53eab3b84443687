"""linux_slab: the accounting invariants of reference/linux-slab.md 9 item 13 after every step
of random multi-CPU, multi-node alloc / free / node-directed alloc / drain / reap sequences
(hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import CacheSpec
from policies.linux_slab import LinuxSlabPolicy
from simcore import Machine, MachineConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP

ops = st.lists(st.tuples(st.integers(0, 3),
                         st.sampled_from(["alloc", "alloc", "burst", "nosleep", "node", "free",
                                          "free", "freeburst", "drain", "reap"]),
                         st.integers(0, 1), st.integers(0, 10_000)),
               min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(ops, st.sampled_from([True, False]), st.sampled_from([-1, 0]))
def test_accounting_invariants_after_every_step(seq, under_lock, shared):
    m = Machine(MachineConfig(nodes=2, cpus_per_node=2))
    p = LinuxSlabPolicy(m, {"destroy_under_lock": under_lock, "cpucache_shared": shared,
                            "cpucache_limit": 6, "cpucache_batchcount": 3})
    caches = [p.cache_create(CacheSpec("c64", 64)), p.cache_create(CacheSpec("c1k", 1024))]
    held: list[list[int]] = [[], []]
    for cpu, op, ci, k in seq:
        c = caches[ci]

        def body(t, op=op, c=c, ci=ci, k=k):
            if op in ("alloc", "nosleep", "burst"):
                for _ in range(20 if op == "burst" else 1):
                    obj = yield from p.alloc(t, c, KM_NOSLEEP if op == "nosleep" else KM_SLEEP)
                    assert obj is not None
                    held[ci].append(obj)
            elif op == "node":
                obj = yield from p.alloc_node(t, c, KM_SLEEP, k % 2)
                held[ci].append(obj)
            elif op in ("free", "freeburst") and held[ci]:
                for _ in range(min(len(held[ci]), 20 if op == "freeburst" else 1)):
                    yield from p.free(t, c, held[ci].pop(k % len(held[ci])))
            elif op == "drain":
                yield from p.cache_reap(t)
            elif op == "reap":
                yield from p.reap(t, c)

        m.spawn(f"s{m.env.now}", body, cpu=cpu)
        m.run(m.env.now + 500_000_000)
        p.check_invariants()
        for c, mine in zip(caches, held, strict=True):
            st_ = p.stats(c)
            assert st_.objs_inuse == len(mine) == len(set(mine))
            num_objs = st_.slabs * c.geo.num
            active = num_objs - st_.objs_free
            assert active == len(mine) + st_.objs_cached  # cached objects count as active
            assert c.high_mark >= c.num_active == active
            assert st_.bytes_slab == st_.slabs * st_.pages_per_slab * 4096
