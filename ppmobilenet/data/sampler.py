"""The batch sampler: order from (seed, epoch) alone, one disjoint shard per rank, and a start
offset for exact mid-epoch resume.

One global permutation of the data set per (seed, epoch) (numpy PCG64, identical on every rank);
with `pad` it is extended by wrapping around to a multiple of world_size so every rank gets the
same number of batches (DataParallel needs that in training); rank r takes positions
r, r + W, r + 2W, ... so global batch b (all ranks together) is positions [b*B*W, (b+1)*B*W) of
the permutation: the same composition as one card with batch B*W. Without `pad` (evaluation)
the shards are exactly disjoint and cover the data once; ranks may then differ by one batch.
"""
import math

import numpy as np
import paddle


class ShardedBatchSampler(paddle.io.BatchSampler):
    """len() is the number of batches in the full epoch; iteration starts at `start_batch`."""

    def __init__(self, num_samples, batch_size, shuffle=True, drop_last=False, seed=0, epoch=0,
                 rank=0, world_size=1, start_batch=0, pad=True):
        # BatchSampler.__init__ wants a dataset or sampler; only its interface is needed here
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.num_samples_total = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.pad = bool(pad)
        self.set_epoch(epoch, start_batch)

    def set_epoch(self, epoch, start_batch=0):
        # checked here: an error raised while paddle's loader thread iterates would hang it
        if not 0 <= int(start_batch) <= len(self):
            raise ValueError(f"start_batch {start_batch} out of range: the epoch has {len(self)} batches "
                             f"(did batch_size, world_size or the data change since the checkpoint?)")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def _shard(self):
        n, w = self.num_samples_total, self.world_size
        if self.shuffle:
            order = np.random.default_rng([self.seed % (1 << 63), self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        if self.pad and w > 1 and n % w:
            extra = math.ceil(n / w) * w - n
            order = np.concatenate([order, np.resize(order, extra)])
        return order[self.rank::w]

    @property
    def num_samples(self):
        """Samples this rank sees in a full epoch (padding included)."""
        n, w = self.num_samples_total, self.world_size
        if self.pad:
            return math.ceil(n / w)
        return len(range(self.rank, n, w))

    def __len__(self):
        k = self.num_samples
        return k // self.batch_size if self.drop_last else math.ceil(k / self.batch_size)

    def __iter__(self):
        shard = self._shard()
        for b in range(self.start_batch, len(self)):
            yield shard[b * self.batch_size:(b + 1) * self.batch_size].tolist()
