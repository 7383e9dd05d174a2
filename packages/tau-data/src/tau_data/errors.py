"""One error type for every bad dataset, config or stats input, always naming dataset, file and field."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset, mixture config or stats file that tau-data cannot use, with where and why."""

    def __init__(self, message: str, *, dataset: str | None = None, file: str | Path | None = None,
                 field: str | None = None) -> None:
        self.dataset = dataset
        self.file = str(file) if file is not None else None
        self.field = field
        where = ", ".join(f"{k}={v!r}" for k, v in (("dataset", dataset), ("file", self.file), ("field", field))
                          if v is not None)
        super().__init__(f"{message} [{where}]" if where else message)
