"""linux_slab CPU hotplug and retuning (seed 003 cpuup_callback 1082-1262, do_tune_cpucache
3553, slabinfo_write 3966; seed 004's cpuup_canceled and __do_tune_cpucache), driven by
experiment events (experiments/events.py).

Expected figures are derived from the seed: size-64 with SLAB_HWCACHE_ALIGN on 4 CPUs has
limit 120, batchcount 60, num 59 (enable_cpucache 3612-3646, cache_estimate), so free_limit
at creation is (1 + 4) x 60 + 59 = 359 (alloc_kmemlist 3510)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simrun import run_on

from experiments.config import ConfigError, validate
from experiments.events import EventSection, Hotplug
from experiments.run import build
from policies.base import CacheSpec
from policies.linux_slab import LinuxSlabPolicy
from policies.linux_slab.geometry import cpu_array_bytes
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP

SPAN = 50_000_000


def setup(**tun):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=4),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = LinuxSlabPolicy(m, tun)
    c = p.cache_create(CacheSpec("size-64", 64, flags=("SLAB_HWCACHE_ALIGN",)))
    return m, p, c


def churn_on(m, p, c, cpu, n):
    """n allocations then n frees on `cpu`: the first refill after creation takes
    BATCHREFILL_LIMIT = 16 objects (2762-2770), so the array ends with 16 objects."""
    held = []

    def body(t):
        for _ in range(n):
            held.append((yield from p.alloc(t, c, 0)))
        while held:
            yield from p.free(t, c, held.pop())
    run_on(m, cpu, body, SPAN)


def test_cpu_dead_flushes_the_array_lowers_free_limit_and_shrinks_the_node():
    """CPU_DEAD (1201-1213, 1245-1252): array[cpu] = NULL after free_block of its 16 objects,
    free_limit 359 - 60 = 299, the node's free slab destroyed by __node_shrink; the shared
    array stays because CPUs 0-2 of the node are still online (1215)."""
    m, p, c = setup()
    churn_on(m, p, c, 3, 10)
    assert c.array[3].avail == 16 and c.nodelists[0].free_limit == 359
    meta_before = p.stats(c).bytes_meta
    hp = Hotplug(m, p)
    run_on(m, 0, lambda t: hp.cpu_down(t, 3), SPAN)
    l3 = c.nodelists[0]
    assert c.array[3] is None
    assert l3.free_limit == 299
    assert l3.shared is not None
    assert (len(l3.slabs_free), len(l3.slabs_partial), l3.free_objects) == (0, 0, 0)
    assert p.stats(c).bytes_meta == meta_before - cpu_array_bytes(120, False)
    p.check_invariants()
    # CPU_UP_PREPARE (1123-1126, 1139-1152): free_limit = (1 + 3 online) x 60 + 59 = 299
    # (the CPU coming up is not online yet), a new empty array of limit 120
    run_on(m, 0, lambda t: hp.cpu_up(t, 3), SPAN)
    assert l3.free_limit == 299
    assert c.array[3] is not None and (c.array[3].limit, c.array[3].avail) == (120, 0)
    assert p.stats(c).bytes_meta == meta_before
    p.check_invariants()


def test_patch004_keeps_the_offlined_cpus_array_allocated():
    """Seed 004 (cpuup_canceled hunk): nc = per_cpu_ptr(cpu_cache, cpu), free_block,
    nc->avail = 0, no kfree: the array and its memory stay while the CPU is down."""
    m, p, c = setup(percpu_cpu_cache=True)
    churn_on(m, p, c, 3, 10)
    array = c.array[3]
    meta = p.stats(c).bytes_meta
    hp = Hotplug(m, p)
    run_on(m, 0, lambda t: hp.cpu_down(t, 3), SPAN)
    assert c.array[3] is array and array.avail == 0
    assert p.stats(c).bytes_meta == meta
    assert c.nodelists[0].free_limit == 299
    run_on(m, 0, lambda t: hp.cpu_up(t, 3), SPAN)
    assert c.array[3] is array
    p.check_invariants()


def test_last_cpu_of_a_node_frees_shared_and_alien_arrays():
    """CPU_DEAD with the node's cpumask empty (1215-1235): the shared array's objects go to
    free_block and it is freed; the alien arrays are drained into their nodes and freed."""
    m = Machine(MachineConfig(nodes=2, cpus_per_node=1),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = LinuxSlabPolicy(m)
    c = p.cache_create(CacheSpec("size-64", 64, flags=("SLAB_HWCACHE_ALIGN",)))
    objs = []

    def alloc3(t):
        for _ in range(3):
            objs.append((yield from p.alloc(t, c, 0)))
    run_on(m, 0, alloc3, SPAN)

    def free_remote(t):
        for o in objs:
            yield from p.free(t, c, o)
    run_on(m, 1, free_remote, SPAN)  # node-0 objects freed on node 1: alien array
    assert c.nodelists[1].alien[0].avail == 3
    hp = Hotplug(m, p)
    run_on(m, 0, lambda t: hp.cpu_down(t, 1), SPAN)
    l3 = c.nodelists[1]
    assert l3.shared is None and l3.alien == {}
    assert c.nodelists[0].shared.avail == 3  # __drain_alien_cache: into node 0's shared array
    p.check_invariants()


def _experiment(events, tunables=None, duration="60ms", stop=None):
    data = {
        "duration": duration, "seed": 3,
        "machine": {"cpus_per_node": 4},
        "memory": {"size": "512MiB"},
        "policy": {"name": "linux_slab", "tunables": tunables or {}},
        "caches": [{"name": "size-64", "size": 64, "flags": ["SLAB_HWCACHE_ALIGN"]}],
        "workloads": [{"kind": "steady", "caches": ["size-64"], "live_objects": 200,
                       "lifetime": {"dist": "exponential", "mean": "20us"},
                       "think": "500ns", **({"stop": stop} if stop else {})}],
        "events": events,
    }
    return validate(data, Path("hotplug.toml"))


def test_offline_and_online_events_in_a_run():
    """Acceptance 3: `[[events]]` take CPU 3 down at 10 ms and back at 30 ms. While it is
    down no thread runs there (its workload thread moved), its array is gone and
    free_limit = 359 - 60; afterwards a new array exists and free_limit = 4 x 60 + 59."""
    exp = _experiment([{"at": "10ms", "cpu_offline": 3}, {"at": "30ms", "cpu_online": 3}])
    sim = build(exp)
    m, p = sim.machine, sim.policy
    c = sim.caches["size-64"]
    m.run(20_000_000)
    assert p.cpu_is_online == [True, True, True, False]
    assert c.array[3] is None and c.nodelists[0].free_limit == 299
    busy3 = m.cpus[3].busy_ns
    ops = sum(w.allocs for w in sim.workloads)
    m.run(29_000_000)
    assert m.cpus[3].busy_ns == busy3  # the stopper holds CPU 3, nothing else runs there
    assert sum(w.allocs for w in sim.workloads) > ops  # the moved thread goes on elsewhere
    m.run(exp.duration)
    assert p.cpu_is_online == [True] * 4
    assert c.array[3] is not None and c.nodelists[0].free_limit == 299
    assert m.cpus[3].busy_ns > busy3
    kinds = [e["kind"] for e in m.metrics.log.events]
    assert kinds.count("cpu_offline") == kinds.count("cpu_dead") == kinds.count("cpu_online") == 1
    off = next(e for e in m.metrics.log.events if e["kind"] == "cpu_offline")
    # the stopper waits for the running thread's next scheduling point: at most a time slice
    assert off["time_ns"] >= 10_000_000 and off["waited_ns"] < m.sched_slice + 100_000
    p.check_invariants()


def test_reaper_restarts_only_when_down_clears_reap_work():
    """start_cpu_timer (883-886) initialises reap_work only while its func is NULL: in 2.6.17
    an onlined CPU's cache_reap does not come back; with 2.6.19's CPU_DOWN_PREPARE clearing
    the func it restarts HZ + 3 x cpu jiffies after CPU_ONLINE."""
    for restart in (False, True):
        exp = _experiment([{"at": "100ms", "cpu_offline": 3}, {"at": "200ms", "cpu_online": 3}],
                          {"reap_work_cancel_on_down": restart}, duration="3s", stop="2ms")
        sim = build(exp)
        sim.machine.run(exp.duration)
        runs = sim.policy.reapers[3].runs
        # the first pass would be at HZ + 9 ticks = 1.009 s, after the offline at 0.1 s; the
        # restarted timer's first pass is at 0.2 s + 1.009 s, its second 2 s later (> 3 s)
        assert runs == (1 if restart else 0)


def test_retune_event_changes_limit_batchcount_shared():
    """do_tune_cpucache at 20 ms (3553-3595): every online CPU gets a new array of the new
    limit and batchcount, the old arrays' objects go back to the slabs, the shared array is
    replaced with shared x batchcount entries, free_limit = (1 + 4) x 16 + 59 = 139."""
    exp = _experiment([{"at": "20ms", "retune": "size-64", "limit": 32, "batchcount": 16,
                        "shared": 2}], duration="40ms")
    sim = build(exp)
    c = sim.caches["size-64"]
    old = list(c.array)
    sim.machine.run(exp.duration)
    assert (c.limit, c.batchcount, c.shared) == (32, 16, 2)
    assert all(ac is not o and (ac.limit, ac.batchcount) == (32, 16)
               for ac, o in zip(c.array, old, strict=True))
    l3 = c.nodelists[0]
    assert l3.shared.limit == 32 and l3.free_limit == 139
    assert all(ac.avail <= 32 for ac in c.array)
    text = sim.policy.reports()["slabinfo.txt"]
    assert " : tunables   32   16    2 " in text
    tunes = [e for e in sim.machine.metrics.log.events if e["kind"] == "tune_cpucache"]
    assert len(tunes) == 1 and tunes[0]["time_ns"] >= 20_000_000
    sim.policy.check_invariants()


@pytest.mark.parametrize("events,key,reason", [
    ([{"at": "1ms", "cpu_offline": 9}], "events[0].cpu_offline", "no CPU 9"),
    ([{"at": "1ms", "cpu_online": 1}], "events[0].cpu_online", "already online"),
    ([{"at": "1ms", "cpu_offline": 1, "cpu_online": 2}], "events[0].at", "exactly one"),
    ([{"at": "1ms", "retune": "size-64", "limit": 8, "batchcount": 9, "shared": 0}],
     "events[0].batchcount", "batchcount <= limit"),
    ([{"at": "1ms", "retune": "size-64", "limit": 0, "batchcount": 0, "shared": 0}],
     "events[0].limit", "limit >= 1"),
    ([{"at": "1ms", "retune": "nope", "limit": 8, "batchcount": 4, "shared": 0}],
     "events[0].retune", "no cache named"),
    ([{"at": "1ms", "cpu_offline": c} for c in range(4)], "events[3].cpu_offline",
     "last online CPU"),
])
def test_bad_events_are_one_line_errors(events, key, reason):
    with pytest.raises(ConfigError) as exc:
        _experiment(events)
    msg = str(exc.value)
    assert msg.startswith(f"hotplug.toml: {key}: ") and reason in msg and "\n" not in msg


def test_retune_on_a_policy_without_retuning_is_rejected():
    data = _experiment([]).model_dump(mode="json", exclude_none=True)
    data["policy"] = {"name": "global_lock"}
    data["events"] = [{"at": "1ms", "retune": "size-64", "limit": 8, "batchcount": 4,
                       "shared": 0}]
    for k in ("base_dir", "source", "workload_params"):
        data.pop(k, None)
    with pytest.raises(ConfigError, match="events\\[0\\].retune: policy 'global_lock' has no"):
        validate(data, Path("hotplug.toml"))
    assert EventSection(at=0, cpu_online=1).kind == "cpu_online"


hp_ops = st.lists(st.tuples(st.integers(0, 3),
                            st.sampled_from(["alloc", "burst", "free", "freeburst", "down",
                                             "up", "retune", "reap"]),
                            st.integers(0, 10_000)),
                  min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(hp_ops, st.sampled_from([True, False]), st.sampled_from([1, 2]))
def test_invariants_across_hotplug_and_retune(seq, percpu, nodes):
    """Object conservation and s_show's accounting checks after every step of random
    allocations, frees, CPUs going down and up and retunes (2.6.17 and patch 004, 1 and 2
    nodes): only online CPUs have arrays (2.6.17), or every possible CPU has one and an
    offline CPU's is empty (patch 004)."""
    m = Machine(MachineConfig(nodes=nodes, cpus_per_node=4 // nodes),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = LinuxSlabPolicy(m, {"percpu_cpu_cache": percpu, "cpucache_limit": 6,
                            "cpucache_batchcount": 3})
    c = p.cache_create(CacheSpec("c64", 64))
    hp = Hotplug(m, p)
    held: list[int] = []
    downs: list[int] = []
    for cpu, op, k in seq:
        online = [i for i in range(4) if p.cpu_is_online[i]]
        where = online[cpu % len(online)]
        victim = online[k % len(online)]
        if op == "down" and len(online) > 1:
            where = next(i for i in online if i != victim)

        def body(t, op=op, k=k, victim=victim, online=online):
            if op == "down" and len(online) > 1:
                yield from hp.cpu_down(t, victim)
                downs.append(victim)
            elif op == "up" and len(online) < 4:
                yield from hp.cpu_up(t, next(i for i in range(4) if not p.cpu_is_online[i]))
            elif op == "retune":
                limit = 1 + k % 12
                yield from p.retune(t, c, {"limit": limit, "batchcount": 1 + k % limit,
                                           "shared": k % 3})
            elif op in ("alloc", "burst"):
                for _ in range(15 if op == "burst" else 1):
                    held.append((yield from p.alloc(t, c, KM_SLEEP)))
            elif op in ("free", "freeburst") and held:
                for _ in range(min(len(held), 15 if op == "freeburst" else 1)):
                    yield from p.free(t, c, held.pop(k % len(held)))
            elif op == "reap":
                yield from p.reap(t, c)
        run_on(m, where, body, SPAN)
        p.check_invariants()
        st_ = p.stats(c)
        assert st_.objs_inuse == len(held) == len(set(held))
        assert sum(1 for ac in c.array if ac is not None) == (4 if percpu else sum(p.cpu_is_online))
        for cpu_id, ac in enumerate(c.array):
            if not p.cpu_is_online[cpu_id] and ac is not None:
                assert percpu and ac.avail == 0
