"""Output folders written so that an interrupt or a crash never leaves a mix.

`RunFolder` writes each file under a temporary name and renames it into place (for folders that
gather files over time: a sweep's results table, compare's figures). `StagedFolder` builds a
whole folder (a run, a scenario, a sweep point) in a hidden sibling `.<name>.partial` and, when
complete, swaps it in place of the old one: a reader sees the previous folder, or nothing for
an instant, or the new one; never files of two runs. A rerun removes what an earlier
interrupted one left behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w


class RunFolder:
    """Atomic writers for one run's output folder (created on first write). A file that cannot
    be written (no space, read-only, permissions) is a one-line ConfigError naming it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        """The folder."""
        self.shown = self.path
        """The folder as error messages name it."""
        self.written: list[str] = []
        """File names written so far, in order."""

    def _target(self, name: str) -> tuple[Path, Path]:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / name
        return final, final.with_name(f".{final.name}.tmp")

    def _commit(self, tmp: Path, final: Path) -> None:
        os.replace(tmp, final)
        if final.name not in self.written:
            self.written.append(final.name)

    def _write(self, name: str, fill: Callable[[Path], object]) -> Path:
        from experiments.problems import ConfigError

        try:
            final, tmp = self._target(name)
            fill(tmp)
            self._commit(tmp, final)
        except OSError as exc:
            raise ConfigError(f"{self.shown / name}: cannot write: {exc.strerror or exc}") \
                from None
        return final

    def write_text(self, name: str, text: str) -> Path:
        return self._write(name, lambda tmp: tmp.write_text(text))

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def write_toml(self, name: str, data: dict[str, Any]) -> Path:
        return self.write_text(name, tomli_w.dumps(data))

    def write_parquet(self, name: str, df: pd.DataFrame) -> Path:
        return self._write(name, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow",
                                                           compression="zstd"))

    def write_figure(self, name: str, fig: Any, dpi: int = 110) -> Path:
        """Save a matplotlib figure (format from the name's suffix)."""
        fmt = Path(name).suffix.lstrip(".")
        return self._write(name, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt,
                                                         bbox_inches="tight"))


def staging_path(final: Path) -> Path:
    """Where a staged folder for `final` is built: a hidden sibling."""
    return final.with_name(f".{final.name}.partial")


def retired_path(final: Path) -> Path:
    """Where the previous folder waits for removal while the new one takes its name."""
    return final.with_name(f".{final.name}.old")


def check_writable(final: Path, option: str = "--out", shown: Path | None = None) -> None:
    """ConfigError naming `option` (and `shown`, default `final`) unless a folder can be
    created at `final`: every existing ancestor is a directory, `final` is not a file, and the
    nearest existing one can be written."""
    from experiments.problems import ConfigError

    final = Path(final)
    if final.exists() and not final.is_dir():
        raise ConfigError(f"{option} {shown or final}: {final} exists and is not a directory"
                          if shown else f"{option} {final}: exists and is not a directory")
    shown = shown or final
    probe = final
    while not probe.exists():
        if probe.is_symlink():
            raise ConfigError(f"{option} {shown}: {probe} is a dangling symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option} {shown}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {shown}: {probe} is not writable")


OUTPUT_MARKERS = ("config.toml", "summary.json", "point.json", "scenario.json", "validation.json",
                  "error.txt")
"""Files by which a folder is recognised as kmemsim's own output (a run, a sweep point, a
scenario): only such a folder (or an empty one) is replaced by a rerun."""


class StagedFolder(RunFolder):
    """A folder built whole in `.<name>.partial` and swapped into place by `commit`."""

    def __init__(self, path: Path, option: str = "--out") -> None:
        path = Path(path)
        if path.name in ("", ".", ".."):
            path = path.resolve()
        super().__init__(path)
        self.final = path
        """Where the folder appears when committed."""
        self.path = staging_path(self.final)
        self.shown = self.final
        self.option = option
        """The command-line option that named the folder (for error messages)."""

    def open(self) -> StagedFolder:
        """Remove leftovers of an interrupted earlier attempt and create the staging folder;
        ConfigError naming the option if it cannot be created."""
        from experiments.problems import ConfigError

        check_writable(self.final, self.option)
        if self.final.is_dir() and any(self.final.iterdir()) and \
                not any((self.final / m).exists() for m in OUTPUT_MARKERS):
            raise ConfigError(f"{self.option} {self.final}: exists and is not a kmemsim output "
                              "folder (it would be replaced whole); choose another folder")
        try:
            for old in (self.path, retired_path(self.final)):
                if old.exists():
                    shutil.rmtree(old)
            self.path.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(f"{self.option} {self.final}: cannot write: "
                              f"{exc.strerror or exc}") from None
        return self

    def commit(self) -> Path:
        """Put the finished folder in place of the previous one (if any); its final path."""
        old = retired_path(self.final)
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old.exists():
            shutil.rmtree(old)
        self.path = self.final
        return self.final

    def discard(self) -> None:
        """Drop the staging folder (the previous folder stays as it was)."""
        if self.path != self.final and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
