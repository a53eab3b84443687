"""missed-wakeup (zfs#9989, issue 16 acceptance 1): the window in which the pre-2020 wake-up
order strands a growth waiter, and the scenario's figures on its own output.

Before 2adc6b35 __spl_cache_grow woke the waiters under skc_lock and spl_cache_grow_work
cleared KMC_BIT_GROWING afterwards. A waiter woken on an idle CPU re-checks GROWING after the
reschedule IPI, the exit from idle and a context switch (`wakeup_ipi` + `context_switch`,
5 us); the worker reaches its clear_bit a few tens of ns after the wake-up unless something
takes its CPU in between: an interrupt that arrived during the wake loop (IRQs off under the
wait-queue lock) is taken at the spin_unlock_irqrestore. A handler longer than the wake-up
latency lets the waiter see GROWING still set; it sleeps on, and with no other growth of the
cache nothing wakes it before HZ/10."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from simrun import run_on

from experiments import scenarios
from policies.base import CacheSpec
from policies.spl import SplPolicy
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP

MS = 1_000_000
US = 1_000


def _wait_with_irq_at_wake(wake_order: str, handler_ns: int | None) -> int:
    """One KM_SLEEP allocation on CPU 0 of a 2-CPU machine from an empty cache: the growth
    worker runs on idle CPU 1. With `handler_ns` an interrupt arrives on the worker's CPU
    during its wake_up_all's loop (taken at the wait-queue lock's spin_unlock_irqrestore) and
    runs that long. Returns the longest growth wait."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2),
                memory_config=MemoryConfig(total_bytes=1 << 30))
    p = SplPolicy(m, {"grow_wake_order": wake_order})
    c = p.cache_create(CacheSpec("zio_buf_32768", 32 * 1024))
    p.start()
    wake = c.waitq.wake_up_all

    def handler(t):
        t.charge_ns(handler_ns)
        yield from t.sync()

    def wake_with_irq(t):
        if t is not None and handler_ns is not None and c.waitq.waiters:
            # due 100 ns into the wake loop (one wake_up costs 200 ns), with IRQs off
            m.raise_irq(t.cpu.id, handler, "disk", at=t.now + 100)
        yield from wake(t)

    c.waitq.wake_up_all = wake_with_irq

    def body(t):
        yield from p.alloc(t, c, KM_SLEEP)

    run_on(m, 0, body, span=2_000 * MS)
    return m.metrics.hist("spl.grow_wait").max


def test_pre_2020_order_wins_without_an_interrupt_in_the_window():
    # the waiter sleeps on CPU 0, the worker grows on CPU 1: the woken waiter needs 5 us to
    # re-check, the worker's clear_bit follows its wake-up by tens of ns
    assert _wait_with_irq_at_wake("wake_then_clear", None) < 1 * MS


def test_an_interrupt_longer_than_the_wakeup_latency_strands_the_pre_2020_waiter():
    # 10 us of handler between wake_up_all and clear_bit (the scenario's block completions):
    # the waiter re-checks at +5 us, sees GROWING, sleeps on and is only woken by the HZ/10
    # timeout (then GROWING is clear, so the cache is not marked DEADLOCKED)
    assert _wait_with_irq_at_wake("wake_then_clear", 10 * US) == 100 * MS


def test_an_interrupt_shorter_than_the_wakeup_latency_does_not_strand():
    # 2 us of handler: the worker clears GROWING before the waiter is back on its CPU
    assert _wait_with_irq_at_wake("wake_then_clear", 2 * US) < 1 * MS


def test_the_fixed_order_is_not_hurt_by_the_interrupt():
    # 2adc6b35: GROWING is clear before anyone is woken, so the re-check always succeeds
    assert _wait_with_irq_at_wake("clear_then_wake", 10 * US) < 1 * MS


def _scenario(out: Path, duration: str | None, seed: int | None = None) -> dict:
    sc = scenarios.load(scenarios.available()["missed-wakeup"])
    if duration is not None:
        sc.base["duration"] = duration
    if seed is not None:
        sc.base["seed"] = seed
    scenarios.run(sc, out, None)
    return json.loads((out / "scenario.json").read_text())["variants"]


def test_missed_wakeup_short_run_keeps_the_fixed_order_fast(tmp_path):
    # the first 500 ms of the scenario (default run): no wait of the fixed order reaches 100 ms;
    # the pre-2020 order's waits are almost all fast (a stranding may or may not occur yet)
    res = _scenario(tmp_path, "500ms")
    fixed, buggy = res["fixed"]["facts"], res["pre-2020"]["facts"]
    assert fixed["long_wait_share"] == 0.0
    assert fixed["grow_wait_max_ns"] < 100 * MS
    assert fixed["grow_waits"] > 100 and buggy["grow_waits"] > 100
    assert buggy["grow_wait_fast_share"] >= 0.95


@pytest.mark.slow
def test_missed_wakeup_full_run_reproduces_zfs9989(tmp_path):
    # issue 16 acceptance 1 on the scenario's own output (24 s, seed 11): >= 95 % of the
    # pre-2020 waits end within 1 ms, and waits of 100 ms or more hold 50..90 % of the time
    # spent in spl_cache_grow (zfs#9989: 99.5 % under 64 us, ~70 % of the time in outliers);
    # the fixed order never waits 100 ms
    res = _scenario(tmp_path, None)
    fixed, buggy = res["fixed"]["facts"], res["pre-2020"]["facts"]
    assert buggy["grow_wait_fast_share"] >= 0.95
    assert 0.5 <= buggy["long_wait_share"] <= 0.9
    assert fixed["long_wait_share"] == 0.0
    assert fixed["grow_wait_max_ns"] < 100 * MS
