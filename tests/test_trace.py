"""trace.json (simcore.trace, experiments.tracing): Chrome trace-event JSON with one track per
CPU, the deadlocked threads' lock spans and the DEADLOCKED instant; bounded by window and cap;
recording changes nothing else in the run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import scenarios
from experiments.cli import main
from experiments.tracing import KEY_AFTER, KEY_BEFORE
from simcore.trace import CPU_STRIDE, TraceRecorder

PHASES = {"M", "X", "i"}


def _trace_args(**kw) -> argparse.Namespace:
    base = {"trace": True, "trace_window": None, "trace_events": 200_000}
    base.update(kw)
    return argparse.Namespace(**base)


def _check_trace_event_json(doc: dict) -> None:
    """The JSON Object Format of the trace-event spec: traceEvents with ph/pid/tid/name, ts in
    us on every non-metadata event, dur >= 0 on complete events."""
    assert isinstance(doc["traceEvents"], list) and doc["displayTimeUnit"] == "ns"
    for e in doc["traceEvents"]:
        assert e["ph"] in PHASES and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert isinstance(e["name"], str)
        if e["ph"] != "M":
            assert isinstance(e["ts"], float | int) and e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0
        if e["ph"] == "i":
            assert e["s"] in ("t", "g")


def test_reclaim_deadlock_variant_writes_trace_json(tmp_path: Path) -> None:
    sc = scenarios.load(scenarios.available()["reclaim-deadlock"])
    (vr,) = scenarios.run(sc, tmp_path, ["noemergency"], trace=_trace_args())
    assert vr.result.status == "deadlock"
    doc = json.loads((tmp_path / "noemergency" / "trace.json").read_text())
    _check_trace_event_json(doc)
    ev = doc["traceEvents"]
    ncpu = vr.result.summary["machine"]["cpus"]
    names = {e["tid"]: e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    cpu_tracks = sorted(n for n in names.values() if n.startswith("CPU ") and n[4:].isdigit())
    assert cpu_tracks == sorted(f"CPU {c}" for c in range(ncpu))
    # The window is the default one: around the first DEADLOCKED.
    dl_set = int(vr.events.loc[vr.events.kind == "deadlocked_set", "time_ns"].min())
    meta = doc["metadata"]
    assert meta["window_ns"] == [dl_set - KEY_BEFORE, dl_set + KEY_AFTER]
    assert meta["max_events"] == 200_000 and meta["dropped"] == {}
    instants = [e for e in ev if e["ph"] == "i"]
    assert [e["ts"] for e in instants if e["name"] == "deadlocked_set"] == [dl_set / 1000]
    assert any(e["name"].startswith("deadlock report") for e in instants)
    # Every thread of the wait-for cycle has lock spans (holds, spins or the wait it is stuck in).
    cycle = vr.result.deadlock.cycle
    assert len(cycle) >= 2
    lock_threads = {e["args"]["thread"] for e in ev if e.get("cat") == "lock"}
    for name in cycle:
        assert name in lock_threads, name
    stuck = [e for e in ev if e.get("cat") == "lock" and e["args"].get("open")]
    assert {e["args"]["thread"] for e in stuck} >= {t for t in cycle if t.startswith("spl_")}
    # Running-thread spans never overlap on one CPU track.
    for c in range(ncpu):
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev
                      if e.get("cat") == "run" and e["tid"] == c * CPU_STRIDE)
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(runs, runs[1:], strict=False))


def test_run_trace_window_and_cap_bound_the_file_and_change_nothing(tmp_path: Path) -> None:
    cfg = "experiments/configs/quickstart.toml"
    common = ["--set", 'duration="5ms"', "--no-progress"]
    assert main(["run", cfg, "--out", str(tmp_path / "plain"), *common]) == 0
    assert main(["run", cfg, "--out", str(tmp_path / "traced"), *common,
                 "--trace-window", "1ms:2ms", "--trace-events", "500"]) == 0
    assert not (tmp_path / "plain" / "trace.json").exists()
    for f in ("summary.json", "lock_stat.txt", "histograms.parquet", "timeline.parquet"):
        assert (tmp_path / "plain" / f).read_bytes() == (tmp_path / "traced" / f).read_bytes()
    doc = json.loads((tmp_path / "traced" / "trace.json").read_text())
    _check_trace_event_json(doc)
    meta = doc["metadata"]
    assert meta["window_ns"] == [1_000_000, 2_000_000] and meta["max_events"] == 500
    body = [e for e in doc["traceEvents"] if e["ph"] != "M"]
    capped = [e for e in body if not e["args"].get("open")]  # spans open at the end are extra
    assert len(capped) == 500 and len(body) - len(capped) <= 4 + 4
    assert sum(meta["dropped"].values()) > 0
    assert all(1000 <= e["ts"] <= 2000 and e["ts"] + e.get("dur", 0) <= 2000 + 1e-6
               for e in body)
    cats = {e.get("cat") for e in body}
    assert {"run", "lock"} <= cats


def test_bad_trace_window_is_exit_2_nothing_written(tmp_path: Path, capsys) -> None:
    rc = main(["run", "experiments/configs/quickstart.toml", "--out", str(tmp_path / "o"),
               "--trace-window", "5ms:1ms"])
    assert rc == 2 and not (tmp_path / "o").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert "--trace-window" in err[-1] and "END must be after START" in err[-1]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["lock", "taskq", "run", "irq"]),
                          st.integers(0, 10_000), st.integers(0, 3_000)), max_size=120))
def test_spans_on_one_track_always_nest(spans: list[tuple[int, str, int, int]]) -> None:
    """Lock and taskq spans that overlap without nesting are spread over lanes, so on every
    track of the document any two spans are disjoint or one contains the other (what the
    trace-event format can draw)."""
    rec = TraceRecorder()
    for cpu, track, start, dur in spans:
        if track in ("run", "irq"):
            continue  # one thread / one IRQ-off section at a time: never overlapping
        rec.span(cpu, track, "x", start, dur, "t")
    doc = rec.document(20_000)
    by_tid: dict[int, list[tuple[float, float]]] = {}
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    kept = sum(len(v) for v in by_tid.values())
    assert kept == sum(1 for s in spans if s[1] in ("lock", "taskq"))
    for items in by_tid.values():
        for a0, a1 in items:
            for b0, b1 in items:
                disjoint = a1 <= b0 or b1 <= a0
                nested = (a0 <= b0 and b1 <= a1) or (b0 <= a0 and a1 <= b1)
                assert disjoint or nested
