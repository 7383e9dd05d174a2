"""Per-frame advantages of one source dataset, stored as parquet beside an iteration's data (never in the dataset).

Columns: row (position in the dataset reader), episode_index, frame_index, success, intervention, reward (normalised),
return (normalised return-to-go), value (the value model's expectation), advantage, positive. The threshold and the
source dataset are kept in the file's schema metadata as well as in threshold.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS: tuple[str, ...] = ("row", "episode_index", "frame_index", "success", "intervention", "reward", "return",
                            "value", "advantage", "positive")


@dataclass
class AdvantageTable:
    """Per-frame arrays (one entry per dataset row, in reader order) and where they came from."""

    source: str
    columns: dict[str, np.ndarray]
    threshold: float

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.columns]
        if missing:
            raise ValueError(f"advantage table of {self.source} lacks columns {missing}")
        lengths = {c: len(self.columns[c]) for c in COLUMNS}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"advantage table of {self.source}: columns differ in length {lengths}")

    def __len__(self) -> int:
        return len(self.columns["row"])

    def save(self, path: Path) -> None:
        """Write to `path` through a temporary file and a rename."""
        table = pa.table({c: pa.array(self.columns[c]) for c in COLUMNS})
        meta = {"tau_rl": json.dumps({"source": self.source, "threshold": self.threshold})}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AdvantageTable:
        if not path.is_file():
            raise FileNotFoundError(f"advantage table {path} does not exist")
        table = pq.read_table(path)
        missing = [c for c in COLUMNS if c not in table.column_names]
        meta = (table.schema.metadata or {}).get(b"tau_rl")
        if missing or meta is None:
            raise ValueError(f"{path} is not a tau-rl advantage table (missing columns {missing} or metadata)")
        info: dict[str, Any] = json.loads(meta)
        return cls(source=info["source"], threshold=float(info["threshold"]),
                   columns={c: table.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS})
