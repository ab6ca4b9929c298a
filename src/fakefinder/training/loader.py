"""The input pipeline for fine-tuning: worker processes read, augment and preprocess crops while the model runs.

Built on `torch.utils.data.DataLoader` (worker processes, pinned memory, prefetching). Workers start from a
fork server, not by forking this process: OpenCV's and OpenMP's thread pools do not survive a fork (a worker
would hang in its first call). They receive file names and a small preprocessing recipe, never the model. Each
sample's augmentation draws from its own stream (seed, epoch, row), so batches are identical whatever the
number of workers, and each process of a distributed run takes its slice of every global batch.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..hardware import single_threaded_opencv
from ..models.backbones import Preprocess
from .augment import Augmenter
from .finetune import epoch_rng
from .pseudofakes import FreshBlends


class CropDataset(Dataset):
    """Crop files -> (normalised CHW float32 tensor, label); augmented when an Augmenter is given, pseudo-fakes
    made anew when FreshBlends are. Rows that share a `draws` key (a real crop and its pseudo-fakes) are augmented
    by one random stream, alike. With `sides`, epoch k's images are sides[k - 1] pixels square (progressive
    resizing), else the input size. With `blend_map`, also where each image was blended, as `--blend-map` learns
    it: (image, label, mask at the image's side, whether the mask is known: a real's is empty, a fake's of the
    data's own unknown)."""

    def __init__(self, files: np.ndarray, labels: np.ndarray, preprocess: Preprocess, augmenter: Augmenter | None,
                 seed: int, fresh: FreshBlends | None = None, part_boxes: np.ndarray | None = None,
                 draws: np.ndarray | None = None, sides: tuple[int, ...] | None = None,
                 blend_map: bool = False) -> None:
        self.files, self.labels = files, labels.astype(np.float32)
        self.preprocess, self.augmenter, self.seed, self.fresh = preprocess, augmenter, seed, fresh
        self.part_boxes = part_boxes  # per row, its face parts (augment.mesh_part_boxes)
        self.draws = draws  # per row, the key of its augmentation's stream (None: its own row)
        self.sides = sides
        self.blend_map = blend_map

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]):
        import cv2

        from ..data.crops import read_crop

        row, epoch = key
        made = self.fresh.blend(self.files, row, epoch_rng(self.seed, epoch, row, 1)) if self.fresh else None
        image, mask = made if made is not None else (read_crop(self.files[row]), None)
        known = mask is not None or self.labels[row] == 0
        if self.blend_map and mask is None:
            mask = np.zeros(image.shape[:2], np.float32)
        if self.augmenter is not None:
            key = row if self.draws is None else int(self.draws[row])
            image, mask = self.augmenter.apply(image, epoch_rng(self.seed, epoch, key),
                                               None if self.part_boxes is None else self.part_boxes[row],
                                               mask if self.blend_map else None)
        preprocess = self.preprocess
        if self.sides is not None and self.sides[epoch - 1] != preprocess.input_size:
            preprocess = dataclasses.replace(preprocess, input_size=self.sides[epoch - 1])
        x, y = torch.from_numpy(preprocess(image)), torch.tensor(self.labels[row])
        if not self.blend_map:
            return x, y
        side = preprocess.input_size  # the mask framed as the image the network sees
        mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_AREA if mask.shape[0] > side else
                          cv2.INTER_LINEAR)
        return x, y, torch.from_numpy(mask.astype(np.float32)), torch.tensor(float(known))


def epoch_sides(first: int, full: int, epochs: int) -> tuple[int, ...]:
    """Progressive resizing's image side per epoch: from `first` evenly up to `full`, the last epoch at `full`
    (the size the model is validated and used at), each a multiple of 8 (whole cells of the network's grid)."""
    if epochs == 1:
        return (full,)
    return tuple(int(8 * round((first + (full - first) * k / (epochs - 1)) / 8)) if k < epochs - 1 else full
                 for k in range(epochs))


class EpochBatches(Sampler):
    """Batches of (row, epoch) keys, shuffled per epoch; this process takes its share of each. Rows of one
    `together` key stay next to each other (a real crop beside its pseudo-fakes: a batch then holds the pairs that
    differ only by a blend).

    Under several processes a last batch too small to give each one a sample is left out of the epoch: a process
    without one would stop while the others wait for its gradients."""

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int, *, shuffle: bool, rank: int = 0,
                 world: int = 1, together: np.ndarray | None = None) -> None:
        self.rows, self.batch_size, self.seed, self.shuffle = rows, batch_size, seed, shuffle
        self.together = together
        self.rank, self.world, self.epoch = rank, world, 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.rows), self.batch_size)
        return full + int(rest >= self.world)  # world >= 1: an empty rest never counts

    def global_size(self, step: int) -> int:
        """Samples in batch `step` (from 1) over all processes: the batch size, less for the last one."""
        return min(self.batch_size, len(self.rows) - (step - 1) * self.batch_size)

    def __iter__(self):
        order = self.rows
        if self.shuffle and self.together is not None:
            keys, inverse = np.unique(self.together[self.rows], return_inverse=True)
            rank = np.empty(len(keys), dtype=np.int64)
            rank[epoch_rng(self.seed, self.epoch).permutation(len(keys))] = np.arange(len(keys))
            order = self.rows[np.argsort(rank[inverse], kind="stable")]
        elif self.shuffle:
            order = epoch_rng(self.seed, self.epoch).permutation(self.rows)
        for s in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[s:s + self.batch_size]
            mine = np.array_split(batch, self.world)[self.rank]  # equal shares: DDP's mean = the global mean
            yield [(int(r), self.epoch) for r in mine]


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def make_loader(dataset: CropDataset, sampler: EpochBatches, *, workers: int, device: torch.device) -> DataLoader:
    # Its own generator: a DataLoader otherwise draws its workers' seeds from the global RNG, which would make
    # dropout and stochastic depth depend on the number of workers (and touch the caller's RNG).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                      worker_init_fn=single_threaded_opencv if workers else None, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(sampler.seed),
                      multiprocessing_context="forkserver" if workers else None)


def iterate(loader: DataLoader):
    """The loader's batches; a worker's UsageError comes back as the one line it was, not as a traceback."""
    from ..errors import UsageError

    try:
        yield from loader
    except UsageError as exc:
        raise UsageError(str(exc).rstrip().splitlines()[-1].split("UsageError: ", 1)[-1]) from None


def batches(loader: DataLoader, device: torch.device):
    """epoch -> (x, y, *what else the dataset gives) on `device`, x channels-last, copied asynchronously from
    pinned memory."""
    def run(epoch: int):
        loader.batch_sampler.epoch = epoch
        for x, *rest in iterate(loader):
            yield (x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                   *(t.to(device, non_blocking=True) for t in rest))
    return run
