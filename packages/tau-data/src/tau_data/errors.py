"""One error type for every bad dataset, config or stats input, always naming dataset, file and field."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset, mixture config or stats file that tau-data cannot use, with where and why, on one line.

    It pickles with its dataset/file/field, so a loader worker can hand it back to the main process intact.
    """

    def __init__(self, message: str, *, dataset: str | None = None, file: str | Path | None = None,
                 field: str | None = None) -> None:
        self.message = " ".join(str(message).split())  # one line, whatever a wrapped library's text looks like
        self.dataset = dataset
        self.file = str(file) if file is not None else None
        self.field = field
        where = ", ".join(f"{k}={v!r}" for k, v in (("dataset", dataset), ("file", self.file), ("field", field))
                          if v is not None)
        super().__init__(f"{self.message} [{where}]" if where else self.message)

    def __reduce__(self) -> tuple:
        return _rebuild, (type(self), self.message, self.dataset, self.file, self.field)


def _rebuild(cls: type[DatasetError], message: str, dataset: str | None, file: str | None,
             field: str | None) -> DatasetError:
    return cls(message, dataset=dataset, file=file, field=field)
