"""Resumable weighted loading: a counter-based mixture sampler inside torchdata's StatefulDataLoader.

Draw k of epoch e is a pure function of (seed, epoch, k): pick a member by the mixture weights, a uniform row in it,
and an augmentation seed. The sampler's state is just (epoch, position), so saving the loader's state mid-epoch and
restoring it replays exactly the same following batches, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torchdata.stateful_dataloader import Stateful, StatefulDataLoader

from tau_data.errors import DatasetError
from tau_data.mixture import MixtureDataset

_BLOCK = 4096


class MixtureSampler(torch.utils.data.Sampler, Stateful):
    """Yields (dataset_index, row, augmentation_seed), `samples_per_epoch` per epoch, with replacement.

    With several ranks, rank r takes draws r, r + world_size, ... of the same stream.
    """

    def __init__(self, lengths: list[int] | np.ndarray, weights: list[float] | np.ndarray, samples_per_epoch: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, repeat: bool = False) -> None:
        self.repeat = repeat  # every iteration draws epoch 0 again (a validation stream, the same each time)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.samples_per_epoch, self.seed = int(samples_per_epoch), int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        return len(range(self.rank, self.samples_per_epoch, self.world_size))

    def draws(self, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (dataset, row, seed) arrays of draws [block * 4096, (block + 1) * 4096) of `epoch`."""
        rng = np.random.default_rng([self.seed, epoch, block])
        datasets = rng.choice(len(self.lengths), size=_BLOCK, p=self.weights)
        rows = (rng.random(_BLOCK) * self.lengths[datasets]).astype(np.int64)
        seeds = rng.integers(0, 2**62, size=_BLOCK)
        return datasets, rows, seeds

    def __iter__(self) -> _MixtureIterator:
        iterator = _MixtureIterator(self, 0 if self.repeat else self.epoch)
        self.epoch += 1
        return iterator

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw epoch `epoch` (a trainer placing the stream after a resume)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])


class _MixtureIterator(Iterator, Stateful):
    def __init__(self, sampler: MixtureSampler, epoch: int) -> None:
        self.sampler, self.epoch, self.position = sampler, epoch, 0
        self._block: tuple[int, Any] | None = None

    def __next__(self) -> tuple[int, int, int]:
        s = self.sampler
        k = s.rank + self.position * s.world_size
        if k >= s.samples_per_epoch:
            raise StopIteration
        block = k // _BLOCK
        if self._block is None or self._block[0] != block:
            self._block = (block, s.draws(self.epoch, block))
        datasets, rows, seeds = self._block[1]
        self.position += 1
        j = k % _BLOCK
        return int(datasets[j]), int(rows[j]), int(seeds[j])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.sampler.epoch = self.epoch + 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class _FailedBatch:
    """A batch whose fetch raised a DatasetError, carried back as the batch so that the error crosses the worker
    boundary pickled whole (torch would re-raise it rebuilt from its traceback text, dataset/file/field lost)."""

    def __init__(self, error: DatasetError) -> None:
        self.error = error


SampleTransform = Callable[..., dict[str, Any]]  # transform(sample, rng=draw_seed) -> sample


def draw_seed(index: Any) -> int:
    """The seed of one draw: the sampler's own per-draw seed of a (dataset, row, seed) key, else one made from the
    index, so the same draw always gets the same seed (what exact resume needs of a random transform)."""
    if isinstance(index, (tuple, list)):
        return int(index[2]) if len(index) > 2 else int(index[0]) * 2**32 + int(index[1])
    return int(index)


class _DatasetErrorsAsBatches(torch.utils.data.Dataset):
    """The loader's view of a dataset: each sample passed through the optional transform (in the worker that
    fetched it), and a DatasetError while fetching a batch turned into a `_FailedBatch`."""

    def __init__(self, dataset: torch.utils.data.Dataset, transform: SampleTransform | None = None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        sample = self.dataset[index]
        return sample if self.transform is None else self.transform(sample, rng=draw_seed(index))

    def __getitems__(self, indices: list[Any]) -> list[Any] | _FailedBatch:
        try:
            return [self[i] for i in indices]
        except DatasetError as error:
            return _FailedBatch(error)


class _CollateUnlessFailed:
    """The loader's collate function, passing a `_FailedBatch` through untouched."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any] | _FailedBatch) -> Any:
        return items if isinstance(items, _FailedBatch) else self.collate_fn(items)


class _RaiseFailedBatches(Iterator):
    """Iterates the loader's own iterator, raising the DatasetError of a `_FailedBatch` in the main process."""

    def __init__(self, iterator: Iterator) -> None:
        self.iterator = iterator

    def __len__(self) -> int:
        return len(self.iterator)

    def __next__(self) -> Any:
        batch = next(self.iterator)
        if not isinstance(batch, _FailedBatch):
            return batch
        error = batch.error
        del batch
        try:
            raise error
        finally:
            del error  # no error -> traceback -> this frame -> error cycle: the loader is freed (workers shut down)
            #            as soon as the caller drops the error, not at some later garbage collection


class _DatasetLoader(StatefulDataLoader):
    """A StatefulDataLoader whose workers hand a DatasetError back whole: iterating raises that one error (file,
    field and what was expected) instead of torch's re-raise carrying the worker's traceback as its message."""

    def __init__(self, dataset: torch.utils.data.Dataset, *, transform: SampleTransform | None = None,
                 collate_fn: Callable | None = None, **kwargs: Any) -> None:
        super().__init__(_DatasetErrorsAsBatches(dataset, transform),
                         collate_fn=_CollateUnlessFailed(collate_fn or torch.utils.data.default_collate), **kwargs)

    def __iter__(self) -> Iterator:
        return _RaiseFailedBatches(super().__iter__())


def make_loader(dataset: MixtureDataset, batch_size: int, *, num_workers: int = 2, seed: int = 0,
                samples_per_epoch: int | None = None, rank: int = 0, world_size: int = 1,
                prefetch_factor: int | None = None, transform: SampleTransform | None = None,
                repeat: bool = False, **kwargs: Any) -> StatefulDataLoader:
    """A StatefulDataLoader drawing from the mixture by its weights; `.state_dict()` / `.load_state_dict()` resume
    mid-epoch exactly. Workers use one torch thread and open their video decoders themselves (with num_workers=0,
    call torch.set_num_threads(1) yourself: data-side math with several threads crawls on small CPUs). A bad frame
    read in a worker raises its DatasetError in the caller, intact. `transform(sample, rng=seed)` (e.g.
    tau_models.SampleTokenizer) runs on every sample inside the workers, `seed` being the draw's own seed; it must
    be picklable for spawned workers. With `repeat` every pass yields the same draws (a validation loader)."""
    sampler = MixtureSampler(dataset.lengths, dataset.weights, samples_per_epoch or len(dataset), seed=seed,
                             rank=rank, world_size=world_size, repeat=repeat)
    return _DatasetLoader(dataset, transform=transform, batch_size=batch_size, sampler=sampler,
                          num_workers=num_workers,
                         worker_init_fn=_worker_init if num_workers else None,
                         prefetch_factor=prefetch_factor if num_workers else None,
                         persistent_workers=False, drop_last=True, **kwargs)
