"""lock_stat as the kernel means it (kernel/locking/lockdep.c lock_contended / __lock_acquired,
printed by lockdep_proc.c): a contended acquire waits at least one cache-line transfer,
contentions are completed contended acquisitions (never more than acquisitions), the bounce
columns count events where the lock's line last belonged to another CPU; and the timeline's
last sample is at the end of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bad_input import GOOD, write

from experiments.cli import main
from simcore.costs import DEFAULT_COSTS, CostTable
from simcore.machine import Machine, MachineConfig
from simcore.metrics import LogHistogram
from simcore.spinlock import LockStat, SpinLock

TRANSFER = DEFAULT_COSTS["cacheline_transfer"][0]


def machine(ncpus: int) -> Machine:
    return Machine(MachineConfig(nodes=1, cpus_per_node=ncpus), costs=CostTable.build({}))


def test_a_handoff_at_the_instant_of_release_still_waits_for_the_line():
    # CPU0 holds the lock until 1000; CPU1 asks at exactly 1000, just before the release (it
    # was spawned first, so its wake-up comes first among the events of that instant). It
    # spins for no time at all, yet its wait is the line's transfer from CPU0, not 0. The
    # holder synchronises before it releases (an uncontended release takes effect at the
    # holder's local time without an event, which would come before any ask at that instant).
    m = machine(2)
    lock = SpinLock(m, "L")

    def holder(t):
        yield from lock.lock(t)
        t.charge_ns(1000 - DEFAULT_COSTS["lock_acquire"][0])
        yield from t.sync()
        yield from lock.unlock(t)

    def late(t):
        t.charge_ns(1000)  # local work: it asks for the lock at 1000
        yield from lock.lock(t)
        yield from lock.unlock(t)

    m.spawn("late", late, cpu=1)
    m.spawn("holder", holder, cpu=0)
    m.run(10_000)
    s = lock.stat
    assert (s.acquisitions, s.contentions) == (2, 1)
    assert s.waittime_min == s.waittime_max == TRANSFER


def test_waiters_still_spinning_at_the_end_are_not_contentions_yet():
    # the holder never releases: three CPUs spin on it when the run ends
    m = machine(4)
    lock = SpinLock(m, "L")

    def holder(t):
        yield from lock.lock(t)
        yield from t.sleep(10**9)

    def spinner(t):
        yield from lock.lock(t)

    m.spawn("holder", holder, cpu=0)
    for c in (1, 2, 3):
        m.spawn(f"s{c}", spinner, cpu=c)
    m.run(1_000_000)
    s = lock.stat
    assert (s.acquisitions, s.contentions, s.con_bounces) == (1, 0, 0)
    assert len(lock.waiters) == 3


def test_con_bounce_only_when_the_line_last_belonged_to_another_cpu():
    # CPU1 holds the lock. CPU0 fails a trylock (its CPU now owns the line), then spins: no
    # con-bounce. CPU2 then spins: the line was last CPU0's, a con-bounce. Both acquisitions
    # after the holder's release pull the line from the previous holder: acq-bounces.
    m = machine(3)
    lock = SpinLock(m, "L")

    def holder(t):
        yield from lock.lock(t)
        t.charge_ns(5000)
        yield from lock.unlock(t)

    def trier(t):
        t.charge_ns(1000)  # local work: it tries at 1000
        got = yield from lock.trylock(t)
        assert not got
        yield from lock.lock(t)
        yield from lock.unlock(t)

    def other(t):
        t.charge_ns(2000)  # it asks at 2000
        yield from lock.lock(t)
        yield from lock.unlock(t)

    m.spawn("holder", holder, cpu=1)
    m.spawn("trier", trier, cpu=0)
    m.spawn("other", other, cpu=2)
    m.run(100_000)
    s = lock.stat
    assert (s.acquisitions, s.contentions, s.con_bounces, s.acq_bounces) == (3, 2, 1, 2)
    assert s.waittime_min >= TRANSFER


def _run(tmp_path: Path, *sets: str) -> Path:
    out = tmp_path / "run"
    argv = ["run", str(write(tmp_path, GOOD)), "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    return out


def test_every_contended_class_in_a_run_waits_at_least_a_transfer(tmp_path):
    out = _run(tmp_path, "machine.cpus_per_node=4", "policy.name=solaris")
    locks = json.loads((out / "summary.json").read_text())["locks"]
    contended = {k: v for k, v in locks.items() if v["contentions"]}
    assert contended
    for name, v in locks.items():
        assert v["contentions"] <= v["acquisitions"], name
        assert v["con_bounces"] <= v["contentions"], name
        assert v["acq_bounces"] <= v["acquisitions"], name
        if v["contentions"]:
            assert v["waittime_min_ns"] >= TRANSFER, name
    # Solaris tries the depot lock before it blocks on it (kmem_depot_alloc's mutex_tryenter):
    # the failed try leaves the line on the waiter's CPU, so not every contention bounces
    depot = next(v for k, v in locks.items() if k.endswith("->cache_depot_lock") and v["contentions"])
    assert depot["con_bounces"] < depot["contentions"]
    table = (out / "lock_stat.txt").read_text().split("\n\n")[1]  # the lock_stat 0.4 rows
    rows = [ln for ln in table.splitlines() if ln.endswith(tuple("0123456789")) and ":" in ln]
    assert len(rows) == len([v for v in locks.values() if v["acquisitions"]])
    for row in rows:
        cols = row.split(":", 1)[1].split()
        if int(cols[1]):  # contentions
            assert cols[2] != "0.00", row  # waittime-min


def test_timeline_ends_at_the_end_of_the_run(tmp_path):
    # 30 ms sampled every 100 us with at most 100 samples: the sampler halves its resolution
    # (every 200, 400 us ...); the last row is still the end of the run
    out = _run(tmp_path, "duration='30ms'", "sampling.interval='100us'",
               "sampling.max_samples=100")
    tl = pd.read_parquet(out / "timeline.parquet")
    end = json.loads((out / "summary.json").read_text())["end_ns"]
    assert end == 30_000_000
    assert int(tl.time_ns.iloc[-1]) == end
    assert tl.time_ns.is_monotonic_increasing and tl.time_ns.is_unique


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=10**7)),
                max_size=60),
       st.lists(st.integers(min_value=0, max_value=59), max_size=5))
def test_tallied_waits_and_holds_fold_to_the_recorded_columns(ops, reads):
    """The lock paths tally waits and holds by value; folding the tallies (on any read,
    whenever it comes) gives the min / max / total columns and the histogram buckets that
    recording each value gives."""
    hists = [LogHistogram("w"), LogHistogram("h"), LogHistogram("w1"), LogHistogram("h1")]
    tallied = LockStat("a", wait_hist=hists[0], hold_hist=hists[1])
    one_by_one = LockStat("b")
    for i, (is_wait, ns) in enumerate(ops):
        if is_wait:
            tallied.waits[ns] += 1
            one_by_one.record_waits(ns, 1)
            hists[2].record(ns)
        else:
            tallied.holds[ns] += 1
            one_by_one.record_holds(ns, 1)
            hists[3].record(ns)
        if i in reads:
            assert tallied.waittime_total == one_by_one.waittime_total
    cols = ("waittime_min", "waittime_max", "waittime_total",
            "holdtime_min", "holdtime_max", "holdtime_total")
    assert [getattr(tallied, c) for c in cols] == [getattr(one_by_one, c) for c in cols]
    for a, b in ((hists[0], hists[2]), (hists[1], hists[3])):
        assert (a.buckets, a.total, a.max) == (b.buckets, b.total, b.max)
