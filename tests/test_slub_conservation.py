"""slub acceptance 3: object conservation and list-state invariants after every step of random
alloc / free / shrink sequences on several CPUs (hypothesis), without sheaves and with small
sheaves, with and without cpu partial lists, on one and two NUMA nodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import CacheSpec
from policies.slub import SlubPolicy
from simcore import Machine, MachineConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP

ops = st.lists(st.tuples(st.integers(0, 3),
                         st.sampled_from(["alloc", "alloc", "alloc", "nosleep", "free", "free",
                                          "free", "shrink"]),
                         st.integers(0, 1), st.integers(0, 10_000), st.integers(1, 6)),
               min_size=1, max_size=40)

CONFIGS = [
    {"nodes": 1, "tun": {}},
    {"nodes": 1, "tun": {"sheaf_capacity": 3}},
    {"nodes": 2, "tun": {"sheaf_capacity": 2, "cpu_partial": 2}},
    {"nodes": 2, "tun": {"CONFIG_SLUB_CPU_PARTIAL": False, "min_partial": 0}},
]


def _conserved(p: SlubPolicy, caches, held) -> None:
    p.check_invariants()
    for s, mine in zip(caches, held, strict=True):
        assert s.inuse == len(mine) and s.transit == 0 and not s.busy
        free = {o for sl in set(s.owner.values()) for o in sl.freelist}
        cached = {o for c in s.cpu_slab for o in c.freelist}
        cached |= {o for sh in s.live_sheaves for o in sh.objects}
        assert not free & set(mine) and not cached & set(mine)
        assert all(o in s.owner for o in mine)
        assert len(free) + len(cached) + len(mine) == len(s.owner)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["plain", "sheaves", "numa-sheaves", "no-cpu-partial"])
@settings(max_examples=80, deadline=None)
@given(seq=ops)
def test_conservation_after_every_step(cfg, seq):
    m = Machine(MachineConfig(nodes=cfg["nodes"], cpus_per_node=4 // cfg["nodes"]))
    p = SlubPolicy(m, cfg["tun"])
    caches = [p.cache_create(CacheSpec("kmalloc-2k", 2048)),
              p.cache_create(CacheSpec("kmalloc-64", 64, ctor_cost=20))]
    held: list[list[int]] = [[], []]
    for cpu, op, ci, k, n in seq:
        s = caches[ci]

        def body(t, op=op, s=s, ci=ci, k=k, n=n):
            for _ in range(n if op != "shrink" else 1):
                if op in ("alloc", "nosleep"):
                    obj = yield from p.alloc(t, s, KM_NOSLEEP if op == "nosleep" else KM_SLEEP)
                    if obj is not None:
                        held[ci].append(obj)
                elif op == "free" and held[ci]:
                    yield from p.free(t, s, held[ci].pop(k % len(held[ci])))
                elif op == "shrink":
                    yield from p.reap(t, s)

        m.spawn(f"s{m.env.now}", body, cpu=cpu)
        m.run(m.env.now + 500_000_000)
        _conserved(p, caches, held)
    for ci, s in enumerate(caches):
        def drain(t, s=s, ci=ci):
            while held[ci]:
                yield from p.free(t, s, held[ci].pop())
            yield from p.reap(t, s)

        m.spawn("drain", drain, cpu=0)
        m.run(m.env.now + 500_000_000)
        _conserved(p, caches, held)
        # flush_all emptied every CPU; __kmem_cache_do_shrink then shrinks node by node, barn
        # first (patch: barn_shrink before the list_lock section). barn_shrink frees the barn's
        # sheaves through __slab_free, which puts a full slab that gets objects back on the
        # shrinking CPU's partial list (put_cpu_partial), and sheaves do not sort objects by
        # node, so a later node's barn can return objects to an earlier node's slabs: what is
        # left is empty, on a node partial list or on a CPU partial list, until the next shrink
        on_cpu_partial = {id(sl) for c in s.cpu_slab for sl in c.partial}
        left = set(s.owner.values())
        assert all(sl.inuse == 0 and (sl.node_partial or id(sl) in on_cpu_partial)
                   for sl in left)
        if s.cpu_sheaves is None:
            assert not left
        m.spawn("shrink", lambda t, s=s: p.reap(t, s), cpu=0)
        m.run(m.env.now + 500_000_000)
        _conserved(p, caches, held)
        assert not s.owner and all(n.nr_slabs == 0 for n in s.node)
