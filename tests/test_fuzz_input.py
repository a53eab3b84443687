"""Fuzzing the bad-input contract: random experiment trees (wrong types, unknown keys, extreme
numbers, nested garbage, bad --set items) and random trace lines always end in exit status 2
with one well-formed line per problem and nothing written, never a traceback.

The CLI entry function runs in-process (no subprocess per file), so the 500 files of the
default run take seconds."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.cli import main

BASE = tomllib.loads("""\
name = "fz"
seed = 1
duration = "1ms"

[machine]
cpus_per_node = 2

[memory]
size = "256MiB"

[policy]
name = "global_lock"

[[caches]]
name = "buf_512"
size = 512

[[workloads]]
kind = "steady"
caches = ["buf_512"]
live_objects = 8
""")

INTERNAL = re.compile(r"Traceback|Section\b|Params\b|[Pp]ydantic|Input should|instance of|"
                      r"ValidationError|TraceError|ConfigError|KeyError|IndexError|TypeError")
FUZZ_SCALE = int(os.environ.get("KMEMSIM_FUZZ_SCALE", "0"))
"""0 (default): the fixed 500 examples; N: N times as many, freshly random (a longer hunt)."""


def fuzz_settings(n: int) -> settings:
    """`n` examples, no deadline, the same examples every run unless KMEMSIM_FUZZ_SCALE."""
    return settings(max_examples=n * max(1, FUZZ_SCALE), deadline=None,
                    derandomize=not FUZZ_SCALE, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
scalars = st.one_of(st.booleans(), st.integers(min_value=-2**80, max_value=2**80),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
garbage = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=4)), max_leaves=12)
not_int = st.one_of(st.booleans(), st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: f != int(f)), st.text(max_size=10), st.lists(scalars, max_size=3),
    st.dictionaries(keys, scalars, max_size=3))


def run_file(data: dict[str, Any], sets: list[str] = (), trace: str | None = None
             ) -> tuple[int, list[str], Path, Path]:
    """Write `data` (and a trace), run `kmemsim run` in-process; (code, stderr lines, the
    experiment file, the --out folder). The folder is removed by `check_bad`."""
    tmp = Path(tempfile.mkdtemp(prefix="kmemsim-fuzz-"))
    if trace is not None:
        (tmp / "t.trace").write_text(trace)
    cfg = tmp / "exp.toml"
    cfg.write_text(tomli_w.dumps(data))
    out = tmp / "out"
    argv = ["run", str(cfg), "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue().strip().splitlines(), cfg, out


def check_bad(code: int, lines: list[str], cfg: Path, out: Path) -> None:
    assert code == 2, lines
    assert lines, "no error line"
    for line in lines:
        assert line.startswith("kmemsim: error: "), line
        where = line[len("kmemsim: error: "):]
        assert where.startswith((str(cfg), "--set ", str(cfg.parent))), line
        assert not INTERNAL.search(line), line
    written = out.exists() or list(out.parent.glob(".out*"))
    shutil.rmtree(cfg.parent)
    assert not written, "something was written"


# --- mutations of a valid file: each one problem, in its own place --------------------------

MUTATIONS = {
    "unknown top-level key": (garbage, lambda d, v: (d.__setitem__("zz_unknown", v),
                                                     "zz_unknown")[1]),
    "machine wrong type": (st.tuples(st.sampled_from(["nodes", "cpus_per_node", "hz"]),
                                     not_int),
                           lambda d, v: (d["machine"].__setitem__(v[0], v[1]),
                                         f"machine.{v[0]}")[1]),
    "extreme duration": (st.one_of(st.integers(max_value=0), st.integers(min_value=2**62 + 1),
                                   st.sampled_from(["1e400s", "-5ms", "5 fortnights", "0s"])),
                         lambda d, v: (d.__setitem__("duration", v), "duration")[1]),
    "extreme memory size": (st.one_of(st.integers(max_value=0), st.integers(min_value=2**60 + 1),
                                      st.sampled_from(["4 KB", "1e999GiB", "12 parsecs", "K"])),
                            lambda d, v: (d["memory"].__setitem__("size", v),
                                          "memory.size")[1]),
    "nested garbage in a cache": (garbage, lambda d, v: (d["caches"][0].__setitem__("junk", v),
                                                         "caches[0].junk")[1]),
    "workload parameter garbage": (not_int, lambda d, v: (d["workloads"][0].__setitem__(
        "live_objects", v), "workloads[0].live_objects")[1]),
    "unknown tunable": (keys, lambda d, v: (d["policy"].setdefault("tunables", {}).__setitem__(
        "no_" + v, 1), f"policy.tunables.no_{v}")[1]),
    "sampling too small": (st.integers(max_value=99), lambda d, v: (
        d.setdefault("sampling", {}).__setitem__("max_samples", v), "sampling.max_samples")[1]),
}


@fuzz_settings(250)
@given(st.data())
def test_mutated_files_get_one_line_per_problem(data):
    chosen = data.draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=5,
                                unique=True))
    d = copy.deepcopy(BASE)
    keys_hit = []
    for name in chosen:
        strategy, apply = MUTATIONS[name]
        keys_hit.append(apply(d, data.draw(strategy)))
    sets = []
    if data.draw(st.booleans()):
        k = data.draw(keys)
        sets.append(f"machine.q{k}={data.draw(st.integers())}")
        keys_hit.append(f"--set machine.q{k}")
    code, lines, cfg, out = run_file(d, sets)
    check_bad(code, lines, cfg, out)
    assert len(lines) == len(keys_hit), (keys_hit, lines)
    for key in keys_hit:
        assert any(f"{key}:" in line for line in lines), (key, lines)


@fuzz_settings(100)
@given(st.dictionaries(keys, garbage, min_size=0, max_size=6))
def test_random_trees_are_bad_input_never_a_traceback(tree):
    code, lines, cfg, out = run_file(tree)
    check_bad(code, lines, cfg, out)


# --- random trace lines -----------------------------------------------------------------------

HEADS = ["time_ns,cpu,op,cache,size,object", "time_ns,cpu,op,cache,sise,object", "",
         "# comment", "cpus=2"]
FRAGMENTS = ["0", "12", "-3", "alloc", "free", "buf", "64", "p1", "0x10", ",", " ", "[000]",
             "1.000001:", "kmem_cache_alloc:", "kmem_cache_free:", "kmalloc:", "ptr=0x10",
             "bytes_alloc=64", "bytes_req=x", "name=dentry", "task-12", "gfp_flags=GFP_ATOMIC",
             "\t", "é", "#"]
trace_lines = st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=10).map("".join),
                       max_size=8)


@fuzz_settings(150)
@given(st.sampled_from(HEADS), trace_lines, st.sampled_from(["auto", "csv", "ftrace"]))
def test_random_trace_lines_get_one_line(head, lines, fmt):
    d = copy.deepcopy(BASE)
    del d["caches"]
    d["workloads"] = [{"kind": "trace", "file": "t.trace", "format": fmt}]
    # the last line is never a valid event, so every trace is bad input
    text = "\n".join([head, *lines, "not an event at all"]) + "\n"
    code, err, cfg, out = run_file(d, trace=text)
    check_bad(code, err, cfg, out)
    assert len(err) == 1, err
    assert re.match(rf"kmemsim: error: {re.escape(str(cfg.parent))}/t\.trace(:\d+)?: ", err[0]), \
        err[0]


def test_the_fuzz_base_is_valid(tmp_path):
    """The mutations start from a file that runs (so each problem is the mutation's)."""
    cfg = tmp_path / "exp.toml"
    cfg.write_text(tomli_w.dumps(BASE))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0


@pytest.mark.parametrize("item", ["=3", "a b=1", "machine..hz=1", "[0]=1", "machine.hz"])
def test_malformed_set_items(tmp_path, item):
    code, lines, cfg, out = run_file(copy.deepcopy(BASE), [item])
    check_bad(code, lines, cfg, out)
    assert len(lines) == 1 and lines[0].startswith("kmemsim: error: --set ")
