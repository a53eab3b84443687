"""The `kmemsim` command line.

Exit status: 0 success; 1 internal error (a bug: the traceback is printed and error.txt is
written to the run folder) or, for `sweep`, a failed point (for `validate`, a value that does
not hold); 2 bad input (one line on stderr per problem, naming the file or --set, the key and
the reason; nothing is written); 3 the run ended
in a detected deadlock (report printed and written to deadlock.txt); 4 `scenario`: a variant did
not reproduce its expected outcome; 130 interrupted (the previous output folder is left as it
was).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic.fields import FieldInfo

from experiments import scenario_cmd, tracing, validate_cmd
from experiments.config import ConfigError, load_experiment
from experiments.output import check_writable
from experiments.problems import positive_int
from experiments.run import EXIT_DEADLOCK, run_experiment
from simcore.costs import COST_SOURCES, DEFAULT_COSTS
from simcore.units import format_duration, parse_duration, plural

try:
    VERSION = version("kmemsim")
except PackageNotFoundError:  # run from a source tree without installing
    VERSION = "unknown"

EXIT_BAD_INPUT = 2

DESCRIPTION = """\
kmemsim: a discrete-event simulator of multicore kernel slab allocators (OpenZFS SPL,
illumos kmem, Linux SLAB, Linux SLUB with sheaves and a global-lock baseline). Experiments
are TOML files; see experiments/configs/ for the shipped ones and docs/experiments.md for
every key.
"""

EPILOG = """\
exit status: 0 ok, 1 internal error (sweep: a point failed; validate: a value does not
hold), 2 bad input (one line per problem, nothing written), 3 deadlock detected, 4 scenario: a
variant did not reproduce its expected outcome, 130 interrupted.

examples:
  kmemsim run experiments/configs/quickstart.toml
  kmemsim run experiments/configs/quickstart.toml --out results/q --seed 7 \\
      --set machine.cpus_per_node=16 --set policy.name=global_lock
  kmemsim sweep experiments/configs/demo.toml --out results/demo/sweep
  kmemsim compare results/demo/sweep --out results/demo
  kmemsim policies
"""


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal (never `\\r` frames in a log file)."""
    return not args.no_progress and sys.stderr.isatty()


def _cmd_run(args: argparse.Namespace) -> int:
    exp = load_experiment(args.file, args.set, args.seed)
    out = Path(args.out) if args.out else Path("results") / exp.name
    res = run_experiment(exp, out, progress=show_progress(args),
                         trace=tracing.recorder(args))
    s = res.summary
    print(f"{exp.name}: policy {s['policy']}, {plural(s['machine']['cpus'], 'CPU')}, "
          f"{format_duration(s['end_ns'])} simulated in {res.wall_seconds:.2f} s wall")
    print(f"  {s['ops']['allocs']} allocs, {s['ops']['frees']} frees, "
          f"{s['ops']['alloc_failures']} failures; "
          f"{res.ops_per_wall_second:,.0f} simulated alloc+free per wall-second")
    print(f"  invariants: {s['invariants']}")
    print(f"  wrote {out}/")
    if res.status == "deadlock":
        print(res.deadlock.text(), file=sys.stderr, end="")
        return EXIT_DEADLOCK
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from experiments.bench import main as bench_main
    return bench_main(args.quick, Path(args.json), args.policy, args.cpus, args.ops,
                      args.workload, args.size, args.warm_ticks or 0)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from experiments.sweep import run_sweep
    out = Path(args.out) if args.out else Path("results") / (Path(args.file).stem + "-sweep")
    df = run_sweep(args.file, out, jobs=args.jobs, dask=args.dask,
                   progress=show_progress(args), overrides=args.set, seed=args.seed)
    counts = df.status.value_counts().to_dict()
    print(f"{plural(len(df), 'point')}: " + ", ".join(f"{n} {k}"
                                                     for k, n in sorted(counts.items())))
    for row in df[df.status == "error"].itertuples():
        print(f"  {row.point} {row.label}: {row.error}", file=sys.stderr)
    print(f"  wrote {out}/results.parquet")
    return 0 if counts.get("error", 0) == 0 else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from experiments.compare import compare
    from experiments.load import RunFolderError, sweep_progress
    for p in args.inputs:
        if not Path(p).is_dir():
            raise ConfigError(f"{p}: no such run or sweep folder")
    check_writable(Path(args.out))
    for p in args.inputs:
        done, total = sweep_progress(p)
        if done < total:
            print(f"kmemsim: note: {p}: interrupted sweep: comparing its "
                  f"{plural(done, 'finished point')}; {total - done} of "
                  f"{plural(total, 'point')} missing (rerun `kmemsim sweep` to finish it)",
                  file=sys.stderr)
    try:
        written = compare(args.inputs, args.out)
    except (FileNotFoundError, RunFolderError) as exc:
        raise ConfigError(str(exc)) from None
    print(f"wrote {plural(len(written), 'file')} to {args.out}/: "
          + ", ".join(p.name for p in written))
    return 0


def _cpu_list(value: str) -> list[int]:
    """`--cpus 4,64`: positive CPU counts."""
    try:
        cpus = [int(x) for x in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPU counts like 4,64, got {value!r}") \
            from None
    if any(n < 1 for n in cpus):
        raise argparse.ArgumentTypeError(f"CPU counts must be >= 1, got {value!r}")
    return cpus


def _size_list(value: str) -> list[int]:
    """`--size 256,32KiB`: positive object sizes."""
    from simcore.units import parse_size
    try:
        sizes = [parse_size(x) for x in value.split(",")]
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected object sizes like 256,32KiB, got {value!r}") \
            from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"object sizes must be >= 1 byte, got {value!r}")
    return sizes


def _cmd_policies(_args: argparse.Namespace) -> int:
    from policies.registry import available
    for name, cls in sorted(available().items()):
        print(f"{name}: {cls.summary}")
        for tb in cls.tunables:
            choices = f" (one of {', '.join(map(str, tb.choices))})" if tb.choices else ""
            print(f"    {tb.name} = {tb.default!r}{choices}")
            for line in textwrap.wrap(tb.doc, 88):
                print(f"        {line}")
        print()
    return 0


def _cmd_workloads(_args: argparse.Namespace) -> int:
    from workloads.registry import available
    for kind, cls in sorted(available().items()):
        print(f"{kind}: {cls.summary}")
        for fname, field in cls.Params.model_fields.items():
            print(f"    {fname} = {_param_default(field)}")
            if field.description:
                for line in textwrap.wrap(field.description, 88):
                    print(f"        {line}")
        print()
    return 0


def _param_default(field: FieldInfo) -> str:
    """A parameter's default as an experiment file would spell it: (required), durations with
    units, nested tables with only the keys that apply."""
    if field.is_required():
        return "(required)"
    default = field.get_default(call_default_factory=True)
    if hasattr(default, "model_dump"):
        durations = {n for n, f in type(default).model_fields.items() if _is_duration(f)}
        parts = []
        for k, v in default.model_dump(exclude_none=True, exclude_defaults=True).items():
            parts.append(f"{k} = {_toml(v, k in durations)}")
        dist = getattr(default, "dist", None)
        if dist is not None and not any(p.startswith("dist =") for p in parts):
            parts.insert(0, f"dist = {_toml(dist, False)}")
        return "{ " + ", ".join(parts) + " }" if parts else "{}"
    if default is None:
        return "(not set)"
    return _toml(default, _is_duration(field))


def _is_duration(field: FieldInfo) -> bool:
    """Whether a pydantic field is a `Duration` (parsed by parse_duration), optional or not."""
    metas = list(field.metadata)
    for arg in getattr(field.annotation, "__args__", ()):
        metas += list(getattr(arg, "__metadata__", ()))
    return any(getattr(m, "func", None) is parse_duration for m in metas)


def _toml(value: object, duration: bool) -> str:
    if duration and isinstance(value, int) and not isinstance(value, bool):
        return f'"{format_duration(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v, duration) for v in value) + "]"
    return repr(value)


def _cmd_costs(_args: argparse.Namespace) -> int:
    for name, (ns, doc) in DEFAULT_COSTS.items():
        print(f"{name:24} {ns:>8} ns  {doc}")
        print(f"{'':36}source: {COST_SOURCES[name]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kmemsim", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"kmemsim {VERSION}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run one experiment file and write its run folder",
                       description="Run one experiment and write a run folder: config.toml, "
                       "summary.json, timeline/events/histograms as Parquet, lock_stat.txt, "
                       "slabinfo.txt and the policy's own reports.")
    r.add_argument("file", help="experiment TOML file")
    r.add_argument("--out", metavar="DIR", help="run folder (default: results/<name>)")
    r.add_argument("--seed", type=int, help="override the experiment's seed")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one key, e.g. machine.cpus_per_node=16 or "
                   "workloads[0].live_objects=128 (repeatable; value read as TOML)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none when stderr is not a terminal)")
    tracing.add_arguments(r)
    r.set_defaults(func=_cmd_run)

    b = sub.add_parser("bench", help="measure the simulator's own speed (ops per wall-second)",
                       description="Run each policy on steady (and producer_consumer) at 4, 64, "
                       "256 and 1024 CPUs with 256 B and 32 KiB objects, each in a fresh "
                       "process, and report simulated "
                       "alloc+free operations per wall-second, SimPy events per operation, "
                       "peak RSS, and the ratio to the raw SimPy event rate measured in the "
                       "same process. Table on stdout, JSON to --json.")
    b.add_argument("--quick", action="store_true", help="4 and 64 CPUs, steady only, short")
    b.add_argument("--policy", action="append", help="only this policy (repeatable)")
    b.add_argument("--workload", choices=["steady", "producer_consumer"],
                   help="only this workload")
    b.add_argument("--cpus", type=_cpu_list, metavar="N,N,..",
                   help="CPU counts instead of the fixed set, e.g. 64 or 4,64")
    b.add_argument("--size", type=_size_list, metavar="SIZE,..",
                   help="object sizes instead of 256 and 32KiB, e.g. 256 or 256,32KiB")
    b.add_argument("--ops", type=positive_int, metavar="N",
                   help="operations per measured window (e.g. 10000000 for the memory bound)")
    b.add_argument("--warm-ticks", type=positive_int, metavar="N",
                   help="simulated ticks the warm-up may last before a window that still "
                   "sees the cache grow is measured anyway and marked 'growing' (default 16; "
                   "the SPL at 1024 CPUs needs 160)")
    b.add_argument("--json", default="results/bench.json", metavar="FILE",
                   help="where to write the JSON results (default: results/bench.json)")
    b.set_defaults(func=_cmd_bench)

    s = sub.add_parser("sweep", help="run an experiment's [sweep] grid in parallel",
                       description="Run every point of the experiment file's [sweep] grid "
                       "(policies x CPU counts x seeds x any key, see docs/compare.md) in "
                       "parallel processes or on a Dask cluster. Each point is a run folder "
                       "under OUT/points/<id>/; OUT/results.parquet has one row per point "
                       "(settings, status, error, headline figures). Rerunning skips finished "
                       "points; a failing point records its error and the others go on "
                       "(exit 1 if any failed).")
    s.add_argument("file", help="experiment TOML file with a [sweep] table")
    s.add_argument("--out", metavar="DIR", help="sweep folder (default: results/<file>-sweep)")
    s.add_argument("--jobs", type=positive_int, metavar="N",
                   help="parallel processes (default: cores)")
    s.add_argument("--dask", metavar="ADDRESS",
                   help="run on the Dask scheduler at ADDRESS, or 'local' for a LocalCluster")
    s.add_argument("--seed", type=int, help="override the experiment's seed (a seed axis of "
                   "the grid still sets each point's seed)")
    s.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one key of the experiment before the grid is applied "
                   "(repeatable; value read as TOML)")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none when stderr is not a terminal)")
    s.set_defaults(func=_cmd_sweep)

    c = sub.add_parser("compare", help="figures and an HTML report comparing runs and sweeps",
                       description="Group the runs by settings (only seeds are averaged, "
                       "with their min-max), label them by what differs, and draw latency and "
                       "IRQ-off tails (log-log CCDFs), lock wait over time per lock, memory "
                       "held by cache with phases and events, fragmentation (held vs "
                       "requested, split by where the memory is), scaling and a summary; write "
                       "them as PNGs with a self-contained report.html (each run's settings, "
                       "per-workload x per-cache table, failed points, inline SVG figures, "
                       "every text report) and runs.parquet. See docs/compare.md.")
    c.add_argument("inputs", nargs="+", metavar="RUN_OR_SWEEP",
                   help="run folders (kmemsim run) and/or sweep folders (kmemsim sweep)")
    c.add_argument("--out", default="results/compare", metavar="DIR",
                   help="where figures and report.html go (default: results/compare)")
    c.set_defaults(func=_cmd_compare)

    scenario_cmd.add_parser(sub)
    validate_cmd.add_parser(sub)
    sub.add_parser("policies", help="list policies and their tunables with defaults",
                   description="List every allocator policy with one line on what it models, "
                   "then each tunable under the kernel's name with its default, allowed values "
                   "and what it controls. Set them in [policy.tunables] or with --set "
                   "policy.tunables.NAME=VALUE."
                   ).set_defaults(func=_cmd_policies)
    sub.add_parser("workloads", help="list workload generators and their parameters",
                   description="List every workload kind with one line on what it generates, "
                   "then each parameter of its [[workloads]] table with its default "
                   "((required) when it has none; durations with units) and what it means. "
                   "See docs/workloads.md."
                   ).set_defaults(func=_cmd_workloads)
    sub.add_parser("costs", help="list the cost table with defaults (override in [costs])",
                   description="List every entry of the simulated machine's cost table: its "
                   "name, its default in nanoseconds and where the number comes from. Override "
                   "any of them in an experiment's [costs] table, e.g. cacheline_transfer = "
                   "\"150ns\"."
                   ).set_defaults(func=_cmd_costs)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"kmemsim: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("kmemsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
