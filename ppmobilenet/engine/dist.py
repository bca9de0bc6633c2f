"""Many processes: rank/world size from paddle.distributed.launch, init, and the few collectives
the engine needs (averaging BN statistics, summing eval counts), and the digest that shows the
ranks hold the same weights."""
import hashlib
import os
import signal

import numpy as np
import paddle
import paddle.distributed as dist

from ..data.worker_watch import set_parent_death_signal
from ..errors import PPMobileNetError

# gloo's own limit (fixed in Paddle 3.3.1: ProcessGroupGloo.create takes no timeout): a collective
# fails when a peer has not answered for this long.
GLOO_TIMEOUT_S = 30


class PeerLost(PPMobileNetError):
    """Another process of this job died, or stopped answering, during a collective."""


def _collective(what, fn, *args, **kwargs):
    """fn(*args) -- a gloo collective -- with its failure (a peer's socket closed: the peer or
    its node died; or GLOO_TIMEOUT_S of silence) turned into PeerLost naming this rank and the
    collective, instead of a bare RuntimeError from gloo's transport."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PeerLost(f"rank {rank()} of {world_size()}: another process of this job was lost during "
                       f"{what}: it died, its node did, or it did not answer for {GLOO_TIMEOUT_S} s "
                       f"(gloo: {detail}). This process stops too; when every node is back, start "
                       f"the job again with -o Global.checkpoints=<Global.output_dir>/latest to "
                       f"resume") from None


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
        _die_with_launcher()
        dist.init_parallel_env()
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _die_with_launcher():
    """The launcher starts each trainer in a session of its own: a launcher killed (its node's
    process group, the OOM killer) left its trainer training, unwatched. Ask for SIGKILL when
    the launcher goes (checkpoints survive SIGKILL; the loader workers follow this process)."""
    launcher = os.getppid()
    if set_parent_death_signal(signal.SIGKILL) and os.getppid() != launcher:
        os.kill(os.getpid(), signal.SIGKILL)        # it went before the request took effect


def wrap(model):
    """Every rank starts from rank 0's weights and buffers. The gradients are averaged by
    average_gradients after each backward pass, not by paddle.DataParallel: its reducer runs
    inside the backward pass, where a lost peer aborts the process (gloo's exception reaches
    C++ `terminate`: a core dump message, no Python error)."""
    if world_size() > 1:
        with paddle.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                _collective("the start-up broadcast of rank 0's weights", dist.broadcast, t, src=0)
    return model


def average_gradients(model):
    """Average every parameter's gradient over the ranks, one all-reduce per dtype. Scaled by
    1/world first, as DataParallel's reducer does, so both give the same bits."""
    n = world_size()
    if n == 1:
        return
    by_dtype = {}
    for p in model.parameters():
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    with paddle.no_grad():
        for grads in by_dtype.values():
            flat = paddle.concat([g.reshape([-1]) for g in grads]) * (1.0 / n)
            _collective("the gradient all-reduce", dist.all_reduce, flat)
            start = 0
            for g in grads:
                size = int(np.prod(g.shape))
                paddle.assign(flat[start:start + size].reshape(g.shape), output=g)
                start += size


def unwrap(model):
    return model._layers if isinstance(model, paddle.DataParallel) else model


def barrier():
    if world_size() > 1:
        _collective("a barrier", dist.barrier)


def all_reduce_sum(values):
    """Sum a list of floats over all ranks (float64 so counts stay exact)."""
    if world_size() == 1:
        return list(values)
    t = paddle.to_tensor(list(values), dtype="float64")
    _collective("a sum over the ranks", dist.all_reduce, t)
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
                _collective("the BatchNorm statistics all-reduce", dist.all_reduce, t)
                p.set_value((t / n).astype(p.dtype))


def weights_digest(model):
    """SHA-1 over every tensor of the state dict, in key order (16 hex digits)."""
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]
