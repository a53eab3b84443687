"""Trace replay (workloads/trace.py): caches named by the frees, and the latency-format flags
driving the replay context (fidelity review, "Trace replay")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.cli import main
from workloads.trace import flags_context, parse_ftrace

SAMPLE = Path("experiments/traces/sample-latency.ftrace.txt").resolve()


def _run(tmp_path: Path, trace: Path, policy: str = "spl") -> dict:
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'name = "t"\nduration = "20ms"\n[machine]\ncpus_per_node = 4\n'
                   f'[policy]\nname = "{policy}"\n'
                   f'[[workloads]]\nkind = "trace"\nfile = "{trace}"\n')
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "summary.json").read_text())


def _h_events(path: Path) -> int:
    """Events whose flags field (the token after [cpu]) has h or H in the hardirq column."""
    n = 0
    for line in path.read_text().splitlines():
        parts = line.split()
        i = next(k for k, p in enumerate(parts) if p.startswith("[") and p.endswith("]"))
        if parts[i + 1][2:3] in ("h", "H"):
            n += 1
    return n


def test_sample_without_alloc_names_ends_with_the_caches_its_frees_name(tmp_path):
    # no kmem_cache_alloc line of the sample carries name=; every one is freed by a
    # kmem_cache_free that names the cache
    text = SAMPLE.read_text()
    allocs = [ln for ln in text.splitlines() if "kmem_cache_alloc:" in ln]
    assert allocs and not any("name=" in ln for ln in allocs)
    s = _run(tmp_path, SAMPLE)
    assert set(s["caches"]) == {"dentry", "skbuff_head_cache", "kmalloc-1024"}


@pytest.mark.parametrize("policy", ["spl", "linux_slab", "solaris", "global_lock"])
def test_h_events_replay_as_interrupts(tmp_path, policy):
    s = _run(tmp_path, SAMPLE, policy)
    h = _h_events(SAMPLE)
    assert h == 352
    assert s["cpu"]["irqs"] == h


def test_flags_of_every_width_are_read():
    # trace_pipe since 5.14 (5 columns), before (4), trace-cmd report (none), perf script
    assert flags_context("d.h2.") == "irq" and flags_context("d.H1") == "irq"
    assert flags_context("..s1.") == "softirq" and flags_context("..s1") == "softirq"
    assert flags_context("d...1") == "irqs_off" and flags_context("D..2") == "irqs_off"
    assert flags_context("d") == "irqs_off" and flags_context(".....") == ""
    assert flags_context(None) == ""


def _trace(tmp_path: Path, lines: list[str]) -> Path:
    f = tmp_path / "t.txt"
    f.write_text("\n".join(lines) + "\n")
    return f


ALLOC = ("kmem_cache_alloc: call_site=x ptr={p} bytes_req=32768 bytes_alloc=32768 "
         "gfp_flags=GFP_KERNEL")
FREE = "kmem_cache_free: call_site=y ptr={p} name=zio_buf_32768"


def test_line_layouts_of_trace_pipe_trace_cmd_and_perf(tmp_path):
    f = _trace(tmp_path, [
        "  bash-1 [000] d.h1 1.000001: " + ALLOC.format(p="0x1"),
        "  bash-1 [001] ..s1. 1.000002: " + ALLOC.format(p="0x2"),
        "  bash-1 [002] 1.000003: " + ALLOC.format(p="0x3"),
        "  bash 1 [003] 1.000004: kmem:" + ALLOC.format(p="0x4"),
        "  bash-1 [000] ..... 1.000010: " + FREE.format(p="0x1"),
        "  bash-1 [000] 1.000011: " + FREE.format(p="0x2"),
        "  bash 1 [000] 1.000012: kmem:" + FREE.format(p="0x3"),
        "  bash-1 [000] d... 1.000013: kmem_cache_free: call_site=y ptr=0x4"])
    tr = parse_ftrace(f)
    assert [op.context for op in tr.ops[:4]] == ["irq", "softirq", "", ""]
    assert tr.ops[-1].context == "irqs_off"
    # the first three take their cache from their frees; the fourth's free names none
    assert [op.cache for op in tr.ops[:4]] == ["zio_buf_32768"] * 3 + ["kmalloc-32768"]
    assert tr.caches == {"zio_buf_32768": 32768, "kmalloc-32768": 32768}


@pytest.mark.parametrize("flags, state", [(".....", (False, 0, 0)), ("d....", (True, 0, 0)),
                                          ("..s1.", (False, 1, 0)), ("d.h2.", (True, 0, 1))])
def test_the_allocator_is_called_in_the_context_of_the_flags(tmp_path, flags, state):
    # the caller's state when the policy's alloc is entered: (IRQs off, preemption-disable
    # depth, interrupt nesting)
    from experiments.config import validate
    from experiments.run import build

    f = _trace(tmp_path, [f"  bash-1 [000] {flags} 1.000001: " + ALLOC.format(p="0x1"),
                          "  bash-1 [000] ..... 1.001000: " + FREE.format(p="0x1")])
    e = validate({"name": "t", "duration": "5ms", "machine": {"cpus_per_node": 2},
                  "policy": {"name": "spl"},
                  "workloads": [{"kind": "trace", "file": str(f)}]}, tmp_path / "x.toml")
    sim = build(e)
    seen = []
    w = sim.workloads[0]
    fast, slow = w._alloc_fast, sim.policy.alloc

    def rec(t):
        seen.append((t.irqs_off, t.preempt_count, t.in_irq))

    def fast_rec(t, cache, fl):
        rec(t)
        return fast(t, cache, fl)

    def slow_rec(t, cache, fl):
        rec(t)
        return (yield from slow(t, cache, fl))

    w._alloc_fast, sim.policy.alloc = fast_rec, slow_rec
    sim.machine.run(e.duration)
    assert seen[0] == state
    assert sim.machine.cpus[0].irq_count == (1 if "h" in flags else 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["dentry", "inode", ""])),
                min_size=1, max_size=40))
def test_every_nameless_alloc_takes_the_name_of_its_free(tmp_path_factory, seq):
    # random alloc/free sequences over 8 pointers: no kmem_cache_alloc names its cache; the
    # free of the same pointer names it ("" = a free without name=); an allocation whose free
    # names nothing, or that is never freed, falls back to kmalloc-<bytes_alloc>
    lines, expect, live = [], [], {}
    for t, (slot, name) in enumerate(seq, start=1):
        ptr = f"0x{slot + 1:x}"
        head = f"  a-1 [000] 1.{t:06d}:"
        if ptr in live:
            lines.append(f"{head} kmem_cache_free: ptr={ptr}" + (f" name={name}" if name else ""))
            expect[live.pop(ptr)] = name or "kmalloc-64"
        else:
            lines.append(f"{head} kmem_cache_alloc: ptr={ptr} bytes_alloc=64")
            live[ptr] = len(expect)
            expect.append("kmalloc-64")
    f = tmp_path_factory.mktemp("h") / "t.txt"
    f.write_text("\n".join(lines) + "\n")
    tr = parse_ftrace(f)
    assert [op.cache for op in tr.ops if op.op == "alloc"] == expect
    # a free replays against the cache its allocation was put in
    by_obj = {op.obj: op.cache for op in tr.ops if op.op == "alloc"}
    assert all(op.cache == by_obj[op.obj] for op in tr.ops if op.op == "free")
