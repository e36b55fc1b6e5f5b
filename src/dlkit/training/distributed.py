"""The distribution seam: one process, or one rank of a torchrun job training with DistributedDataParallel.

The trainer asks this object and never torch.distributed: who am I (rank, world_size, is_main), wrap the model,
shard the batches, sum the on-device totals, gather validation outputs, and agree on every decision that changes
which collectives run next (stop, save, the batch size): a rank that took a branch alone would wait for the
others until the process-group timeout. `connect()` picks OneProcess or ProcessGroup from torchrun's environment.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UserError

if TYPE_CHECKING:  # imported where used instead: the process that only starts torchrun and waits never needs torch
    import torch

TIMEOUT_ENV = "DLKIT_DDP_TIMEOUT"
TIMEOUT_S = 1800  # a collective waiting longer than this means a peer is stuck: fail instead of hanging
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}  # PyTorch's recommendation per device; MPS has no backend


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def world_size() -> int:
    """How many processes the job has: torchrun's WORLD_SIZE, else 1."""
    return int(os.environ["WORLD_SIZE"]) if under_torchrun() else 1


def is_main_process() -> bool:
    """Rank 0, or a process no launcher started: the one that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def connect(device: torch.device, processes: int | None = None, sync_bn: bool = False) -> "OneProcess | ProcessGroup":
    """This process's place in the job: starts the process group when torchrun launched several.

    `processes` is --nproc-per-node: outside torchrun more than one is an error (the CLI launches torchrun itself
    before getting here); under torchrun it must match the processes torchrun started on this machine.
    """
    _check_sync_bn(device, sync_bn)
    if not under_torchrun():
        if processes and processes > 1:
            raise UserError(f"nproc_per_node={processes} needs several processes: run `dlkit train --nproc-per-node "
                            f"{processes} ...`, or start your script with `torchrun --nproc-per-node {processes}`")
        return OneProcess(device)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if processes and processes != local:
        raise UserError(f"--nproc-per-node {processes} but torchrun started {local} process(es) on this machine; "
                        "drop --nproc-per-node when you start dlkit with torchrun")
    return OneProcess(device) if world_size() == 1 else ProcessGroup(device)


def _check_sync_bn(device: torch.device, sync_bn: bool) -> None:
    if sync_bn and device.type != "cuda":
        raise UserError(f"--sync-bn needs CUDA: PyTorch has no SyncBatchNorm on {device.type}; drop --sync-bn "
                        "(each process then normalises with its own batch's statistics)")


def check_launch(device: str, sync_bn: bool) -> None:
    """What every rank would refuse, refused once before torchrun starts them."""
    if sync_bn:  # only then is torch worth importing here
        from ..device import resolve_device

        _check_sync_bn(resolve_device(device), sync_bn)


def exit_code(error: Exception) -> int:
    """How a rank of a DDP job ends on an error: with one line from one rank where one line says it all, else the
    traceback (re-raised for the CLI). Alone, the error always goes on to the CLI.

    An interruption: rank 0 says where it saved and how to resume. A user error: rank 0 says it (the CLI prints it);
    the others met the same one, except an error of their own, which they print with their rank. A collective that
    failed because another rank went away: one line, as torchrun's report after it names the rank that stopped first.
    """
    from ..errors import TrainingInterrupted

    if world_size() == 1:
        raise error
    rank = int(os.environ["RANK"])
    if isinstance(error, TrainingInterrupted):
        if rank == 0:
            print(f"interrupted: {error}\nresume with: {_resume_command(error.run_dir)}", file=sys.stderr, flush=True)
        return error.exit_code
    if isinstance(error, UserError):
        if rank == 0:
            raise error
        if not getattr(error, "same_on_every_rank", False):
            print(f"error: rank {rank}: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    if _peer_lost(error):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: rank {rank}: another process of this job stopped or stopped answering ({first[:200]}); "
              "torchrun's report names the one that failed first", file=sys.stderr, flush=True)
        return 1
    raise error


def same_on_every_rank(error: UserError) -> UserError:
    """Mark an error every rank meets alike (they read the same files and config): rank 0 alone reports it."""
    error.same_on_every_rank = True
    return error


PEER_LOST = ("connection reset", "connection closed", "broken pipe", "timed out", "timeout", "communicator was aborted")


def _peer_lost(error: Exception) -> bool:
    """A failure inside torch.distributed whose words say a peer went away or never answered."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    inside = bool(frames) and "torch/distributed" in frames[-1].filename.replace("\\", "/")
    return inside and any(words in str(error).lower() for words in PEER_LOST)


def _resume_command(run_dir) -> str:
    """The command that continues a run with the same processes: one machine's is `dlkit train`'s own launch."""
    world, local = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if world == local:
        return f"dlkit train --resume {run_dir} --nproc-per-node {world}"
    return f"the same torchrun command on every machine, with: train --resume {run_dir}"


class OneProcess:
    """No distribution: every method is the identity, so the single-process run is exactly what it was."""

    rank, world_size, is_main, label = 0, 1, True, ""

    def __init__(self, device: torch.device):
        self.device = device

    def prepare(self, model: torch.nn.Module, sync_bn: bool) -> torch.nn.Module:
        return model

    def wrap(self, model: torch.nn.Module, compile: bool) -> tuple[Any, Any]:
        """(forward for training, forward for validation): the same compiled or plain model."""
        import torch

        forward = torch.compile(model) if compile else model  # same parameters, compiled graph
        return forward, forward

    def shard(self, batches, evaluation: bool = False):
        return batches

    def split_rng(self, seed: int) -> None:
        pass

    def rank_seed(self, seed: int) -> int:
        return seed

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def total(self, value: int) -> int:
        return value

    def largest(self, value: int) -> int:
        return value

    def smallest(self, value: int) -> int:
        return value

    def all_true(self, flag: bool) -> bool:
        return flag

    def agree(self, value: Any) -> Any:
        return value

    def from_main(self, make: Callable[[], Any]) -> Any:
        return make()

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor | None:
        return tensor

    def gather_objects(self, obj: Any) -> list[Any] | None:
        return [obj]


class ProcessGroup:
    """One rank of a torchrun job. Model-sized traffic (gradients, totals) goes through the device's backend; small
    control messages (flags, decisions, validation outputs, RNG states) through a gloo group on the CPU, so asking
    "did any rank get SIGTERM?" every step never waits for the GPU."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ["LOCAL_RANK"])
        self.is_main = self.rank == 0
        self.label = f", {self.world_size} processes (DDP)"
        self.device = self._own_device(device)
        backend = BACKENDS.get(device.type)
        if backend is None:
            raise UserError(f"several processes on {device.type}: PyTorch has no distributed backend for it; "
                            "use --device cpu or cuda")
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S)))
        if not dist.is_initialized():  # a caller that started its own process group keeps it
            dist.init_process_group(backend, timeout=timeout)
            atexit.register(_destroy)
        self.control = dist.new_group(backend="gloo", timeout=timeout) if dist.get_backend() != "gloo" \
            else dist.group.WORLD

    def _own_device(self, device: torch.device) -> torch.device:
        """cuda:LOCAL_RANK: each process drives its own GPU (NCCL refuses two ranks on one)."""
        if device.type != "cuda":
            return device
        import torch

        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise UserError(f"process {self.local_rank} on this machine has no GPU of its own ({count} visible); "
                            f"use --nproc-per-node {count} or fewer, or --device cpu")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    # ---- the model --------------------------------------------------------------------------------------------

    def prepare(self, model: torch.nn.Module, sync_bn: bool) -> torch.nn.Module:
        """SyncBatchNorm when asked: batch statistics over the global batch, not each rank's slice. The layers keep
        BatchNorm's parameter and buffer names, so checkpoints load into the plain model."""
        import torch

        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn else model

    def wrap(self, model: torch.nn.Module, compile: bool) -> tuple[Any, Any]:
        """(DDP forward for training, the plain model for validation). Validation runs on each rank's own chunk with
        no gradient to average, so it skips DDP (whose forward may broadcast buffers: a collective)."""
        import torch
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        return (torch.compile(ddp) if compile else ddp), model  # compile outside DDP, as PyTorch recommends

    def shard(self, batches, evaluation: bool = False):
        from ..data.loaders import Shard

        if evaluation and batches.num_samples < self.world_size:
            raise UserError(f"the validation split has {batches.num_samples} sample(s), fewer than the "
                            f"{self.world_size} processes; use a larger --val-split or fewer processes")
        batches.set_shard(Shard(self.rank, self.world_size, evaluation))
        return batches

    def split_rng(self, seed: int) -> None:
        """Ranks above 0 draw their own dropout masks (the model is built first, from the same seed everywhere)."""
        import torch

        if self.rank:
            torch.manual_seed(self.rank_seed(seed))

    def rank_seed(self, seed: int) -> int:
        return seed + 7919 * self.rank

    # ---- collectives ------------------------------------------------------------------------------------------

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place, on the tensor's device: the per-rank on-device totals become the job's."""
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def _reduce(self, value: int, op) -> int:
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(value)], dtype=torch.int64)
        dist.all_reduce(t, op=op, group=self.control)
        return int(t)

    def total(self, value: int) -> int:
        import torch.distributed as dist

        return self._reduce(value, dist.ReduceOp.SUM)

    def largest(self, value: int) -> int:
        import torch.distributed as dist

        return self._reduce(value, dist.ReduceOp.MAX)

    def smallest(self, value: int) -> int:
        import torch.distributed as dist

        return self._reduce(value, dist.ReduceOp.MIN)

    def all_true(self, flag: bool) -> bool:
        return bool(self.smallest(int(flag)))

    def agree(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def from_main(self, make: Callable[[], Any]) -> Any:
        """make() run by rank 0 alone, its result on every rank; a UserError there is raised on every rank."""
        result: Any = None
        if self.is_main:
            try:
                result = ("ok", make())
            except UserError as e:
                result = ("error", str(e))
        result = self.agree(result)
        if result[0] == "error":
            raise same_on_every_rank(UserError(result[1]))
        return result[1]

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """Every rank's rows concatenated in rank order on rank 0 (None elsewhere). The chunks may differ in length;
        they are padded to the longest to travel and cut back on arrival, so no row is counted twice."""
        import torch
        import torch.distributed as dist

        tensor = tensor.cpu().contiguous()
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([len(tensor)]), group=self.control)
        longest = max(int(s) for s in sizes)
        padded = torch.zeros(longest, *tensor.shape[1:], dtype=tensor.dtype)
        padded[:len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world_size)] if self.is_main else None
        dist.gather(padded, parts, dst=0, group=self.control)
        return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)]) if self.is_main else None

    def gather_objects(self, obj: Any) -> list[Any] | None:
        import torch.distributed as dist

        objects = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, objects, dst=0, group=self.control)
        return objects


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ---- starting torchrun ---------------------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), for a rendezvous that must not collide with others'."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(processes: int, argv: list[str], port: int | None = None) -> list[str]:
    """`torchrun --nproc-per-node N -m dlkit -- ARGV` on this machine, on a free port instead of the fixed 29500.

    The `--` keeps torchrun's parser off dlkit's options: it takes a prefix of its own for itself (`--monitor
    val_loss` was refused as an ambiguous `--monitor-interval`), and drops the `--` before handing ARGV on."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(port or free_port()), "-m", "dlkit", "--", *argv]


def launch(processes: int, argv: list[str]) -> int:
    """Run `dlkit ARGV` in `processes` processes through torchrun and wait; returns its exit status.

    torchrun runs in its own session, so a Ctrl-C at the terminal reaches this process alone and is passed on once
    (torchrun hands it to every rank; a second one would stop the ranks before they save). SIGTERM is passed on too.
    Each rank gets an equal share of the CPU threads unless OMP_NUM_THREADS says otherwise.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, cpus // processes))}
    child = subprocess.Popen(torchrun_command(processes, argv), env=env, start_new_session=True)

    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if code and received:  # torchrun exits 1 on a signal; say which, as one process would (128 + N)
        return 128 + received[0]
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
