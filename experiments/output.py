"""The run folder: every file is written under a temporary name and renamed into place, so a
crash never leaves a half-written file and never loses files already written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w


class RunFolder:
    """Atomic writers for one run's output folder (created on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        """The folder."""
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

    def write_text(self, name: str, text: str) -> Path:
        final, tmp = self._target(name)
        tmp.write_text(text)
        self._commit(tmp, final)
        return final

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def write_toml(self, name: str, data: dict[str, Any]) -> Path:
        return self.write_text(name, tomli_w.dumps(data))

    def write_parquet(self, name: str, df: pd.DataFrame) -> Path:
        final, tmp = self._target(name)
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
        self._commit(tmp, final)
        return final

    def write_figure(self, name: str, fig: Any, dpi: int = 110) -> Path:
        """Save a matplotlib figure (format from the name's suffix)."""
        final, tmp = self._target(name)
        fig.savefig(tmp, dpi=dpi, format=final.suffix.lstrip("."), bbox_inches="tight")
        self._commit(tmp, final)
        return final
