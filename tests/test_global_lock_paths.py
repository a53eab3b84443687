"""global_lock's paths: the latencies tallied on the cache record reach the alloc.hit /
alloc.grow / free.hit histograms as recording each would put them there (also for a destroyed
cache), and every path charges the cost table's call, slab_obj_op and list_op where the slab
allocator does that work."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import CacheSpec
from policies.global_lock import GlobalLockPolicy
from simcore import Machine, MachineConfig
from simcore.costs import DEFAULT_COSTS, CostTable
from simcore.flags import KM_SLEEP
from simcore.metrics import LogHistogram

PATHS = ("alloc.hit", "alloc.grow", "free.hit")

ops = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["alloc", "alloc", "free", "reap"]),
                         st.integers(0, 1), st.integers(0, 1000)),
               min_size=1, max_size=40)


def _machine(costs: dict[str, int] | None = None) -> Machine:
    return Machine(MachineConfig(nodes=1, cpus_per_node=4), costs=CostTable.build(costs))


def _timed_ops(m: Machine, p: GlobalLockPolicy, caches, seq,
               held: list[list[int]]) -> list[tuple[str, int]]:
    """Run `seq` one operation at a time (`held`: each cache's objects in allocation order);
    (path, latency seen by the caller) of each allocation and free."""
    seen: list[tuple[str, int]] = []
    for cpu, op, ci, k in seq:
        c = caches[ci]

        def body(t, op=op, c=c, ci=ci, k=k):
            start = t.env._now + t.pending
            if op == "alloc":
                grown = c.grown
                held[ci].append((yield from p.alloc(t, c, KM_SLEEP)))
                path = "alloc.grow" if c.grown > grown else "alloc.hit"
            elif op == "free" and held[ci]:
                yield from p.free(t, c, held[ci].pop(k % len(held[ci])))
                path = "free.hit"
            else:
                yield from p.reap(t, c)
                return
            seen.append((path, t.env._now + t.pending - start))

        m.spawn(f"op{cpu}", body, cpu=cpu)
        m.run(m.env.now + 10_000_000)
    return seen


@settings(max_examples=25, deadline=None)
@given(ops, st.booleans())
def test_tallied_paths_are_the_recorded_latencies(seq, destroy):
    m = _machine()
    p = GlobalLockPolicy(m)
    caches = [p.cache_create(CacheSpec("small", 256)), p.cache_create(CacheSpec("big", 20000))]
    held: list[list[int]] = [[], []]
    seen = _timed_ops(m, p, caches, seq, held)
    if destroy:
        # free what `small` holds and destroy it: its tallies must not leave with it
        c = caches[0]
        seen += _timed_ops(m, p, [c], [(0, "free", 0, 0)] * len(held[0]), held)

        def gone(t):
            yield from p.destroy(t, c)

        m.spawn("destroy", gone, cpu=0)
        m.run(m.env.now + 10_000_000)
        assert c not in p.caches
    ref = {name: LogHistogram(name) for name in PATHS}
    for path, ns in seen:
        ref[path].record(ns)
    m.metrics.fold()
    for name, h in ref.items():
        if h.count == 0:
            assert name not in m.metrics.histograms  # made when it first has a value
            continue
        got = m.metrics.histograms[name]
        assert (got.rows(), got.total, got.max) == (h.rows(), h.total, h.max)


def _latencies(costs: dict[str, int] | None) -> list[tuple[str, int]]:
    """One thread: 9 allocations from an 8-object slab cache (grow, 7 hits of which the last
    fills the slab, grow), then 9 frees in allocation order (the first onto the full slab,
    the eighth empties it, the ninth empties the second slab)."""
    m = _machine(costs)
    p = GlobalLockPolicy(m)
    c = p.cache_create(CacheSpec("s", 500))
    assert c.objs_per_slab == 8
    seq = [(0, "alloc", 0, 0)] * 9 + [(0, "free", 0, 0)] * 9
    return _timed_ops(m, p, [c], seq, [[]])


def test_each_path_charges_the_cost_tables_entries():
    base = _latencies(None)
    d_call, d_obj, d_list = 3, 5, 7
    bumped = _latencies({name: DEFAULT_COSTS[name][0] + d for name, d in
                         (("call", d_call), ("slab_obj_op", d_obj), ("list_op", d_list))})
    assert [path for path, _ in base] == [path for path, _ in bumped] == (
        ["alloc.grow"] + ["alloc.hit"] * 7 + ["alloc.grow"] + ["free.hit"] * 9)
    extra = [b - a for (_, a), (_, b) in zip(base, bumped, strict=True)]
    grow = d_call + d_list + d_obj     # call, the new slab linked, an object taken
    hit = d_call + d_obj
    fills = hit + d_list               # the slab moves to the full list
    assert extra[:9] == [grow] + [hit] * 6 + [fills] + [grow]
    # a free onto a full slab moves it to the partial list; one that empties its slab
    # takes it off the partial list
    assert extra[9:] == [hit + d_list] + [hit] * 6 + [hit + d_list] * 2
