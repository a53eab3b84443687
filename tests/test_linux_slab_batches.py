"""linux_slab: the refill and free_block batches (taken a slab / a batch at a time) leave what
the kernel's per-object loops leave: objects in slab_get_obj order, the STATS counters and
the slab lists."""

from __future__ import annotations

from test_linux_slab import alloc_n, free_all, run, setup

from simcore.flags import KM_SLEEP


def test_refill_takes_objects_in_slab_get_obj_order():
    """slab_get_obj takes slabp->free upwards from object 0 and the array is a LIFO: the
    first 16 allocations of a fresh cache return objects 15 down to 0 of the first slab."""
    m, p, c = setup()
    got: list[int] = []
    run(m, 0, alloc_n(p, c, 16, got))
    slab = c.owner[got[0]]
    first = min(got)
    size = c.geo.buffer_size
    assert got == [first + i * size for i in range(15, -1, -1)]
    assert c.owner[first] is slab and slab.inuse == 16
    assert c.num_allocations == 16 and c.num_active == 16 and c.high_mark == 16
    assert c.nodelists[0].slabs_partial.head is slab


def test_refill_across_slabs_counts_every_object_and_fills_slabs():
    """A refill that empties a slab moves it to slabs_full and goes on with the next one;
    num_allocations, num_active and high_mark count every object taken."""
    m, p, c = setup(size=2048)          # num 2, batchcount 12: a refill spans slabs
    got: list[int] = []
    run(m, 0, alloc_n(p, c, 17, got))
    l3 = c.nodelists[0]
    taken = c.num_allocations
    assert taken == 17 + c.array[0].avail
    assert c.num_active == taken and c.high_mark == taken
    assert l3.free_objects == c.grown * c.geo.num - taken
    full = list(l3.slabs_full)
    assert all(s.inuse == c.geo.num and not s.free for s in full)
    assert len(full) + len(l3.slabs_partial) + len(l3.slabs_free) == c.grown


def test_free_block_returns_objects_and_keeps_list_order():
    """free_block puts each object back on its slab (the chain's top is the last freed), a
    slab still in use on slabs_partial, an emptied slab on slabs_free (no shared array: every
    flush goes to free_block)."""
    m, p, c = setup(cpucache_shared=0)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 300, held))
    l3 = c.nodelists[0]
    active0 = c.num_active
    free0 = l3.free_objects
    run(m, 0, free_all(p, c, held))
    freed = c.freemiss * c.array[0].batchcount
    assert c.num_active == active0 - freed
    assert l3.free_objects == free0 + freed
    for s in l3.slabs_partial:
        assert 0 < s.inuse < c.geo.num and len(s.free) == c.geo.num - s.inuse
    for s in l3.slabs_free:
        assert s.inuse == 0 and len(s.free) == c.geo.num
    assert c.num_active == sum(s.inuse for lst in (l3.slabs_full, l3.slabs_partial)
                               for s in lst)


def test_flush_after_refill_round_trip_restores_the_slab():
    """Objects a flush returns are the next ones a refill takes (the slab's free chain is a
    stack), in the array's LIFO order."""
    m, p, c = setup(size=2048, cpucache_limit=8, cpucache_batchcount=4)
    got: list[int] = []
    run(m, 0, alloc_n(p, c, 12, got))
    back = list(got)
    run(m, 0, free_all(p, c, back))
    again: list[int] = []

    def body(t):
        for _ in range(12):
            again.append((yield from p.alloc(t, c, KM_SLEEP)))

    run(m, 0, body)
    assert sorted(again) == sorted(got)
    assert c.num_active == 12 + c.array[0].avail
