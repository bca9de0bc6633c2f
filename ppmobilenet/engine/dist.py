"""Many processes: rank/world size from paddle.distributed.launch, init, and the few collectives
the engine needs (averaging BN statistics, summing eval counts), and the digest that shows the
ranks hold the same weights."""
import hashlib
import os

import numpy as np
import paddle
import paddle.distributed as dist


def world_size():
    # paddle.distributed.launch exports PADDLE_TRAINERS_NUM before the process starts.
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def is_main():
    return rank() == 0


def init(device):
    """Pick the device and, with more than one process, join the process group (gloo on CPU,
    NCCL on GPU). Returns (rank, world_size)."""
    paddle.set_device(device)
    if world_size() > 1:
        dist.init_parallel_env()
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap(model):
    return paddle.DataParallel(model) if world_size() > 1 else model


def unwrap(model):
    return model._layers if isinstance(model, paddle.DataParallel) else model


def barrier():
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(values):
    """Sum a list of floats over all ranks (float64 so counts stay exact)."""
    if world_size() == 1:
        return list(values)
    t = paddle.to_tensor(list(values), dtype="float64")
    dist.all_reduce(t)
    return t.numpy().tolist()


def sync_buffers(model):
    """Average the non-trainable tensors (BatchNorm running mean/variance) over ranks.

    Gradients keep the trainable weights identical on every rank; the BN statistics are
    computed from each rank's own shard and drift apart. Averaging them before eval and save
    gives every rank (and the checkpoint) the same statistics from all the data."""
    if world_size() == 1:
        return
    n = float(world_size())
    with paddle.no_grad():
        for p in unwrap(model).parameters():
            if p.stop_gradient:
                t = p.astype("float32") if p.dtype != paddle.float32 else p.clone()
                dist.all_reduce(t)
                p.set_value((t / n).astype(p.dtype))


def weights_digest(model):
    """SHA-1 over every tensor of the state dict, in key order (16 hex digits)."""
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]
