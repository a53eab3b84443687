"""linux_slab's slab lists: SlabList's fused list_move / list_move_tail and its run move
(`move_first`) leave the lists that list_del + list_add one slab at a time leave, and the
batched cache_alloc_refill and free_block leave every list, counter and object where the
seed's per-object loops (seed 003 cache_alloc_refill 2780-2812, free_block 3040-3069) leave
them, charging the same time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import CacheSpec
from policies.linux_slab import LinuxSlabPolicy
from policies.linux_slab.alloc import BATCHREFILL_LIMIT
from policies.list_head import SlabList
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP


class Node:
    """A list entry: what SlabList needs of a slab."""

    def __init__(self, name: int) -> None:
        self.name = name
        self.prev = self.next = self.on = None


def _check(lists: list[SlabList], model: list[list[Node]]) -> None:
    """Every list holds the model's entries in order, linked both ways, counted, owned."""
    for lst, want in zip(lists, model, strict=True):
        assert list(lst) == want
        assert list(lst.reversed()) == want[::-1]
        assert len(lst) == len(want) and bool(lst) == bool(want)
        assert lst.head is (want[0] if want else None)
        assert lst.tail is (want[-1] if want else None)
        assert all(s.on is lst for s in want)


list_ops = st.lists(st.tuples(st.sampled_from(["move", "move_tail", "move_first", "remove"]),
                              st.integers(0, 2), st.integers(0, 40), st.integers(0, 5)),
                    max_size=60)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=30), list_ops)
def test_fused_moves_are_list_del_then_list_add(start, ops):
    """Random sequences over three lists: move = remove + insert at the head, move_tail =
    remove + append, move_first(src, n) = n times move of src's head, remove = list_del."""
    lists = [SlabList(f"l{i}") for i in range(3)]
    model: list[list[Node]] = [[], [], []]
    nodes = []
    for i, where in enumerate(start):
        s = Node(i)
        lists[where].add_tail(s)
        model[where].append(s)
        nodes.append(s)
    for op, dst, pick, n in ops:
        live = [s for s in nodes if s.on is not None]
        if op == "move_first":
            src = (dst + 1 + pick % 2) % 3
            n = min(n, len(model[src]))
            lists[dst].move_first(lists[src], n)
            for _ in range(n):
                model[dst].insert(0, model[src].pop(0))
        elif live:
            s = live[pick % len(live)]
            model[[s in m for m in model].index(True)].remove(s)
            if op == "remove":
                s.on.remove(s)
                assert s.prev is s.next is s.on is None
            elif op == "move":
                lists[dst].move(s)
                model[dst].insert(0, s)
            else:
                lists[dst].move_tail(s)
                model[dst].append(s)
        _check(lists, model)


class PerObjectSlab(LinuxSlabPolicy):
    """The seed's refill and free_block loops one object at a time: slab_get_obj /
    slab_put_obj per object, list_del + list_add for every slab the loop visits, each cost
    charged where it is incurred."""

    def cache_alloc_refill(self, t, c, flags):
        while True:
            ac = c.array[t.cpu.id]
            node = t.cpu.node
            l3 = c.nodelists[node]
            n = ac.batchcount
            if not ac.touched and n > BATCHREFILL_LIMIT:
                n = BATCHREFILL_LIMIT
            yield from l3.list_lock.lock(t)
            shared = l3.shared
            if shared is not None and self.transfer_objects(t, ac, shared, n):
                if self._shared_touched_on_refill:
                    shared.touched = True
            else:
                taken = 0
                while n > 0:
                    slab = l3.slabs_partial.head
                    if slab is None:
                        l3.free_touched = True
                        slab = l3.slabs_free.head
                        if slab is None:
                            break
                    while slab.inuse < c.geo.num and n > 0:
                        n -= 1
                        c.num_allocations += 1
                        c.num_active += 1
                        c.high_mark = max(c.high_mark, c.num_active)
                        ac.entry.append(self.slab_get_obj(t, slab))
                        taken += 1
                    slab.on.remove(slab)
                    (l3.slabs_full if not slab.free else l3.slabs_partial).add(slab)
                    t.charge("list_op")
                l3.free_objects -= taken
            yield from l3.list_lock.unlock(t)
            if not ac.entry:
                ok = yield from self.cache_grow(t, c, flags, node)
                t.slab_grew = True
                ac = c.array[t.cpu.id]
                if not ok and not ac.entry:
                    return None
                if not ac.entry:
                    continue
            ac.touched = True
            t.charge("magazine_pop")
            return ac.entry.pop()

    def free_block(self, t, c, objs, node):
        later = []
        for obj in objs:
            slab = c.owner[obj]
            l3 = c.nodelists[slab.nodeid]
            slab.on.remove(slab)
            slab.free.append(obj)
            slab.inuse -= 1
            l3.free_objects += 1
            c.num_active -= 1
            t.charge("slab_obj_op")
            t.charge("list_op")
            if slab.inuse == 0:
                if l3.free_objects > l3.free_limit:
                    l3.free_objects -= c.geo.num
                    if self._destroy_under_lock:
                        self.slab_destroy(t, c, slab, "free_limit")
                    else:
                        later.append(slab)
                else:
                    l3.slabs_free.add(slab)
            else:
                l3.slabs_partial.add_tail(slab)
        return later


def _state(m, p, c, got):
    """Everything the two loops could leave differently."""
    lists = [[(s.base, s.inuse, tuple(s.free)) for s in lst]
             for l3 in c.nodelists
             for lst in (l3.slabs_partial, l3.slabs_full, l3.slabs_free)]
    counters = {k: getattr(c, k) for k in (
        "num_allocations", "num_active", "high_mark", "grown", "destroyed", "allochit",
        "allocmiss", "freehit", "freemiss", "max_freeable", "inuse")}
    nodes = [(l3.free_objects, l3.free_touched) for l3 in c.nodelists]
    arrays = [list(ac.entry) for ac in c.array]
    shared = [list(l3.shared.entry) if l3.shared else None for l3 in c.nodelists]
    p.check_invariants()
    return got, lists, counters, nodes, arrays, shared, m.env.now, sorted(
        (lk.name, lk.stat.sums()) for lk in m.metrics.locks), sorted(
        (name, h.buckets, h.total) for name, h in m.metrics.histograms.items())


def _drive(policy_cls, size, tun, steps):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = policy_cls(m, tun)
    c = p.cache_create(CacheSpec(f"size-{size}", size, flags=("SLAB_HWCACHE_ALIGN",)))
    got: list[object] = []
    held: list[int] = []

    def burst(allocs, frees, picks):
        def go(t):
            for _ in range(allocs):
                obj = yield from p.alloc(t, c, KM_SLEEP)
                got.append(obj)
                held.append(obj)
            for i in range(min(frees, len(held))):
                obj = held.pop(picks[i % len(picks)] % len(held))
                yield from p.free(t, c, obj)
                got.append(-obj)
        return go

    for cpu, allocs, frees, picks in steps:
        m.spawn(f"burst{len(got)}", burst(allocs, frees, picks), cpu=cpu)
        m.run(m.env.now + 20_000_000)
    return _state(m, p, c, got)


bursts = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 120), st.integers(0, 120),
                            st.lists(st.integers(0, 1000), min_size=1, max_size=8)),
                  min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([
    (32, {"cpucache_shared": 0, "cpucache_limit": 40, "cpucache_batchcount": 30}),
    (2048, {"cpucache_shared": 0, "cpucache_limit": 8, "cpucache_batchcount": 3}),
    (2048, {"cpucache_limit": 6, "cpucache_batchcount": 5, "destroy_under_lock": False}),
    (32768, {}),
    (32768, {"cpucache_limit": 4, "cpucache_batchcount": 3, "STATS": True}),
]), bursts)
def test_batched_refill_and_free_block_match_the_per_object_loops(case, steps):
    """Bursts of allocations and frees on two CPUs, with free_limit destroys, refills that
    span slabs and end inside one, and 32 KiB slabs of one object: the same objects, lists,
    counters, lock statistics, histograms and clock as the seed's loops."""
    size, tun = case
    assert _drive(LinuxSlabPolicy, size, tun, steps) == _drive(PerObjectSlab, size, tun, steps)
