"""Device and precision: one small seam, so the loop never names cuda or a dtype."""
from __future__ import annotations

import contextlib
import os
import threading

import torch

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu (or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu (or auto)")
    return torch.device(name)


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """cuDNN autotuning unless results must repeat; deterministic kernels when asked; CPU threads that fit."""
    # --deterministic is strict: an op with no deterministic kernel here raises at its first call, naming itself
    # (usually in the first step), instead of a warning lost mid-run while "bitwise-repeatable" is silently false.
    # Listing such ops up front would cost a probe step of the real model; strict costs nothing and misses none.
    current = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if current != (deterministic, False):  # the call imports torch._inductor (~3 s): only when it changes something
        torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        if deterministic:  # cuBLAS repeats only with a fixed workspace, and strict mode refuses matmuls without one
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not deterministic
    usable = usable_cpus()
    if torch.get_num_threads() > usable:  # OpenMP counts the host's cores, not the ones a container or taskset allows
        torch.set_num_threads(usable)
    if device.type == "cpu":
        keep_freed_memory()


def one_thread_here() -> None:
    """Give the calling side thread (TensorBoard's writer, decoders) one intra-op thread, leaving every other thread's
    count as it was. Call it first thing on the thread.

    Each thread that runs a parallel torch op becomes the master of its own OpenMP (and MKL) team, kept for the
    thread's life. Once libgomp manages more threads than there are CPUs it stops spinning between parallel regions,
    and from then on every op of the training thread waits for its workers to wake from a futex: LeNet's steps ran
    1.4x slower for the whole epoch after TensorBoard's writer traced the graph.
    """
    # All under one lock, parallel_info too (it settles this thread's count): threads of a pool start together, and
    # one must not take another's passing 1 as the count to restore
    with _THREAD_COUNT_CHANGE:
        if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
            return  # other backends keep one pool for the process, whose size only the main thread should set
        inherited = torch.get_num_threads()  # this thread's count, taken from the process-wide one on first use
        torch.set_num_threads(1)  # this thread's OpenMP and MKL counts, and (unwanted) the process-wide one
        # which only threads started later read, when they first compute: put it back from a thread that then ends
        restore = threading.Thread(target=torch.set_num_threads, args=(inherited,), name="dlkit-restore-threads")
        restore.start()
        restore.join()


_THREAD_COUNT_CHANGE = threading.Lock()


def keep_freed_memory() -> bool:
    """Let glibc keep freed activations for the next step instead of returning them to the OS.

    By default big blocks are mmap'ed and unmapped on free, so every training step faults its activations in
    again, page by page: LeNet at batch 256 took ~2,500 page faults and ~25% longer per step. Keeping big blocks
    on the heap (up to glibc's 32 MiB mmap ceiling) and not trimming it below 1 GiB of slack removes them; tensors
    above 32 MiB still come from mmap. Linux with glibc only; returns whether it applied.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt = ctypes.CDLL(None).mallopt
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20) and mallopt(M_TRIM_THRESHOLD, 2**30))


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of memory this process can still use (MemAvailable on Linux; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def process_seconds() -> float:
    """Seconds since this process started (from /proc on Linux; since dlkit was imported elsewhere), so run times
    include interpreter start-up and imports, as a stopwatch around the shell command would."""
    import time

    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return max(0.0, time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        from . import _IMPORTED

        return time.time() - _IMPORTED


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX): there autocast speeds up convs and matmuls;
    elsewhere bf16 is emulated and slower than fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype --amp gives here: bf16 on CUDA and on CPUs with native bf16; None means plain fp32."""
    if amp and (device.type == "cuda" or (device.type == "cpu" and native_bf16_cpu())):
        return torch.bfloat16
    return None


def autocast_for(device: torch.device, amp: bool):
    """A zero-argument context factory: bf16 autocast where --amp pays (see amp_dtype), else nothing."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def device_label(device: torch.device, amp: bool) -> str:
    name = f"cuda:{torch.cuda.current_device()}" if device.type == "cuda" else device.type
    return f"{name} {precision_label(device, amp_dtype(device, amp) is not None)}"


def precision_label(device: torch.device, amp: bool) -> str:
    """What the steps compute in: bf16 under autocast; on CUDA, fp32 tensors with TF32 matmuls and convolutions
    (configure_backends turns them on unless --deterministic, as Lightning and timm users expect); else fp32."""
    if amp:
        return "bf16"
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32:
        return "fp32 (tf32 matmuls)"
    return "fp32"


def prefers_channels_last(model: torch.nn.Module, sample: torch.Tensor, device: torch.device,
                           autocast=contextlib.nullcontext) -> bool:
    """Whether NHWC memory is faster for this model here. CUDA: yes for conv nets. CPU: it depends on the layers
    and the precision (plain convs gain up to 2x, BatchNorm loses 2x), so time a few training steps of each on a
    small batch, under the autocast training will use."""
    import time

    if not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return False
    if device.type != "cpu":
        return device.type == "cuda"
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the probe must not change the model

    def seconds(fmt) -> float:
        model.to(memory_format=fmt)
        x = sample.contiguous(memory_format=fmt)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            with autocast():
                out = model(x)
            out.float().logsumexp(1).sum().backward()
            best = min(best, time.perf_counter() - start)
            if best > 0.25:  # a big model: not worth probing on the CPU
                break
        model.zero_grad(set_to_none=True)
        return best

    try:
        model.train()
        plain = seconds(torch.contiguous_format)
        choice = plain < 0.25 and seconds(torch.channels_last) < 0.9 * plain
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.load_state_dict(state)
    return choice
