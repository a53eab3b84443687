"""The `writeback` reclaim dependency: direct reclaim that cannot free enough clean pages waits
for a writeback batch, which allocates from a kmem cache, does its I/O and makes dirty pages
reclaimable; later reclaims find clean pages and do not wait."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.config import validate
from experiments.run import run_experiment


def _exp() -> dict:
    return {
        "name": "wb", "seed": 1, "duration": "50ms",
        "machine": {"cpus_per_node": 2},
        "memory": {"size": "64MiB"},
        "policy": {"name": "global_lock"},
        "caches": [{"name": "zio_buf_16384", "size": "16KiB"}],
        "workloads": [
            {"kind": "steady", "caches": ["zio_buf_16384"], "cpus": [1], "live_objects": 64,
             "lifetime": {"dist": "exponential", "mean": "2ms"}},
            {"kind": "writeback", "cache": "zio_buf_16384", "objects": 16, "io_time": "1ms",
             "pages_cleaned": 2048, "dirty_pages": 16000, "cpu": 0},
        ],
    }


def test_reclaim_waits_for_one_writeback_batch(tmp_path: Path):
    res = run_experiment(validate(_exp(), Path("wb.toml")), tmp_path / "wb")
    assert res.status == "ok"
    ev = pd.read_parquet(tmp_path / "wb" / "events.parquet")
    first = ev[ev.kind == "direct_reclaim"].iloc[0]
    start = ev[ev.kind == "writeback_start"]
    done = ev[ev.kind == "writeback_done"]
    # 16384 pages, 16000 dirty: the 1% min watermark (163 pages) is reached after a few slabs;
    # nothing is clean, so the first reclaim queues a writeback batch at once; the flusher
    # starts it as soon as it is back on its idle CPU (wakeup_ipi 3 us + context switch 2 us)
    assert len(start) == 1 and start.iloc[0].time_ns == first.time_ns + 3000 + 2000
    assert '"waiters": 1' in start.iloc[0].detail
    # ... which allocates its 16 objects from the cache, does 1 ms of I/O and cleans 2048 pages
    assert '"objects": 16' in done.iloc[0].detail and '"pages": 2048' in done.iloc[0].detail
    assert done.iloc[0].time_ns - start.iloc[0].time_ns >= 1_000_000
    # the clean pages serve every later reclaim: no second batch
    assert (ev.kind == "direct_reclaim").sum() >= 2
    assert res.summary["ops"]["alloc_failures"] == 0
