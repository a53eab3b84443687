"""spl: object conservation and counter consistency after every step of random multi-CPU
alloc / free / reap sequences (hypothesis), on a KMC_KVMEM cache with small magazines and a
KMC_SLAB cache served by the Linux slab model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import CacheSpec
from policies.spl import SplPolicy
from simcore import Machine, MachineConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP

ops = st.lists(st.tuples(st.integers(0, 2),
                         st.sampled_from(["alloc", "alloc", "nosleep", "free", "free", "reap"]),
                         st.integers(0, 1), st.integers(0, 10_000)),
               min_size=1, max_size=50)


def _conserved(p: SplPolicy, caches, held) -> None:
    p.check_invariants()
    for c, mine in zip(caches, held, strict=True):
        if c.is_slab:
            assert c.linux_alloc == len(mine)
            continue
        in_slabs = sum(len(s.free) for s in list(c.partial) + list(c.complete))
        cached = sum(len(m.objs) for m in c.mags)
        emergency = [o for o in mine if o in c.emergency]
        assert len(emergency) == c.obj_emergency
        # every slab object is free in its slab, cached in a magazine or in a caller's hands
        assert in_slabs + cached + len(mine) - len(emergency) == c.obj_total - c.obj_emergency
        assert c.obj_alloc == cached + len(mine) - len(emergency)
        assert len(set(mine)) == len(mine)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_conservation_after_every_step(seq):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=3))
    p = SplPolicy(m, {"spl_kmem_cache_magazine_size": 4})
    caches = [p.cache_create(CacheSpec("big", 40_000)), p.cache_create(CacheSpec("small", 512))]
    held: list[list[int]] = [[], []]
    for cpu, op, ci, k in seq:
        c = caches[ci]

        def body(t, op=op, c=c, ci=ci, k=k):
            if op in ("alloc", "nosleep"):
                obj = yield from p.alloc(t, c, KM_NOSLEEP if op == "nosleep" else KM_SLEEP)
                if obj is not None:
                    held[ci].append(obj)
                else:
                    assert op == "nosleep"
            elif op == "free" and held[ci]:
                yield from p.free(t, c, held[ci].pop(k % len(held[ci])))
            elif op == "reap":
                yield from p.reap(t, c)

        m.spawn(f"s{m.env.now}", body, cpu=cpu)
        m.run(m.env.now + 500_000_000)
        _conserved(p, caches, held)
