"""One CUDA graph per training step: forward, loss, backward, clipping and the step's metric sums captured once for
the full batch's shape and replayed, so a small network's step is a handful of launches instead of ~65.

The optimizer and the learning-rate schedule stay eager, after each replay, as torch.cuda.make_graphed_callables
leaves them: every optimizer and schedule then works as it does without graphs (torch's SGD and Muon read a tensor
learning rate on the host, so an optimizer step inside the graph would freeze the schedule or sync every step), at a
few foreach launches a step. The first WARMUP_STEPS full batches run eagerly (cuDNN and cuBLAS pick their kernels,
the optimizer makes its state); the last of them is watched for host syncs, which a graph cannot hold. Other shapes
(the epoch's last short batch) run eagerly, into the same gradient buffers. Capture itself computes nothing, so every
batch is trained exactly once, graphed or not.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

WARMUP_STEPS = 2


@dataclass(frozen=True)
class GraphChoice:
    use: bool
    note: str | None = None  # why not, where the user might have expected graphs


def choose(setting: str, device: torch.device, *, world_size: int = 1, compiled: bool = False,
           skip_nonfinite: bool = False, freeze_epochs: int = 0) -> GraphChoice:
    """Whether a run's training steps are graphed, from its settings alone (--cuda-graphs auto|off)."""
    if setting == "off" or device.type != "cuda":
        return GraphChoice(False)
    reasons = [(world_size > 1, "DDP's gradient all-reduce runs on its own streams, outside a captured graph"),
               (compiled, "--compile builds its own graphs (torch.compile mode reduce-overhead)"),
               (skip_nonfinite, "--nan-policy skip-batch reads each step's loss on the host"),
               (freeze_epochs > 0, "--freeze-epochs changes which parameters have gradients between epochs")]
    why = next((reason for applies, reason in reasons if applies), None)
    if why:
        return GraphChoice(False, f"cuda graphs: off, eager steps ({why})")
    return GraphChoice(True)


class GraphedSteps:
    """The training step of StepParts `parts`, graphed for batches of `batch_size`; eager for every other shape and
    wherever capture fails (then for good, with one note)."""

    def __init__(self, parts, batch_size: int, amp_dtype: torch.dtype | None, say: Callable[[str], None],
                 graph_factory: Callable[[], object] | None = None, record: Callable | None = None):
        self.parts, self.batch_size, self.say = parts, batch_size, say
        # autocast's weight cache would hold casts made during capture: graphs need it off (PyTorch's AMP notes)
        self.autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype, cache_enabled=False)) if amp_dtype else \
            contextlib.nullcontext
        self.new_graph = graph_factory or torch.cuda.CUDAGraph
        self.record = record or record_in_graph  # (graph, step) -> the step's outputs, as buffers replay refills
        self.graph = None
        self.warmed = 0
        self.failed: str | None = None
        self.status = "not captured yet"

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, totals: torch.Tensor) -> torch.Tensor:
        """One training step on (x, labels): returns the batch's mean loss (a tensor of its own, on the device)."""
        full = len(labels) == self.batch_size
        if self.graph is not None and full:
            return self._replay(x, labels, totals)
        if full and self.failed is None:
            self.warmed += 1
            if self.warmed > WARMUP_STEPS:
                self._capture(x, labels)
                if self.graph is not None:
                    return self._replay(x, labels, totals)
            elif self.warmed == WARMUP_STEPS:
                return self._watched_step(x, labels, totals)
        return self._eager_step(x, labels, totals)

    # ---- the step's parts --------------------------------------------------------------------------------------

    def _forward_backward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the graph holds: the loss and [loss sum, score sum, samples] of the batch, gradients in .grad."""
        p = self.parts
        with self.autocast():
            logits = p.model(x)
            loss = p.loss_fn(logits, labels)
        loss.backward()
        if p.clip_grad:  # no host sync: the norm and the clip factor stay on the device
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.clip_grad)
        n = len(labels)
        score = p.score(logits.detach(), labels) if p.score else (logits.argmax(1) == labels).sum()
        loss = loss.detach().float()
        return loss, torch.stack([loss * n, score.float(), loss.new_full((), float(n))])

    def _optimize(self) -> None:
        self.parts.optimizer.step()
        self.parts.scheduler.step()

    def _eager_step(self, x, labels, totals) -> torch.Tensor:
        # once captured, the gradients live in the graph's buffers: zero them, never drop them
        self.parts.optimizer.zero_grad(set_to_none=self.graph is None)
        loss, stats = self._forward_backward(x, labels)
        self._optimize()
        totals[:3] += stats
        return loss

    def _watched_step(self, x, labels, totals) -> torch.Tensor:
        """An eager step whose forward and backward are watched for host syncs (.item(), a data-dependent shape),
        which would make the capture fail or, worse, bake one batch's value into every replay."""
        self.parts.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings(record=True) as seen, _syncs_warned(x.is_cuda):
            warnings.simplefilter("always")
            loss, stats = self._forward_backward(x, labels)
        syncs = [w for w in seen if "synchroniz" in str(w.message)]
        if syncs:
            self._give_up(f"the step synchronises with the host ({str(syncs[0].message).splitlines()[0][:120]}), "
                          "as .item() or a data-dependent shape in forward does")
        self._optimize()
        totals[:3] += stats
        return loss

    def _capture(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Record the step on copies of this batch (the graph's inputs from now on); nothing is computed yet."""
        self.static_x, self.static_labels = x.clone(), labels.clone()  # clone keeps channels_last
        self.parts.optimizer.zero_grad(set_to_none=True)  # the backward in the graph makes the gradient buffers
        graph = self.new_graph()
        try:
            self.static_loss, self.static_stats = self.record(
                graph, lambda: self._forward_backward(self.static_x, self.static_labels))
        except Exception as error:  # noqa: BLE001 - any failure to capture means eager steps, said once
            self.parts.optimizer.zero_grad(set_to_none=True)
            self._give_up(f"capture failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
            return
        self.graph = graph
        self.status = f"captured: each step of {self.batch_size} replays one graph"
        self.say(f"cuda graphs: the training step of {self.batch_size} images (forward, loss, backward"
                 f"{', clipping' if self.parts.clip_grad else ''}, metric sums) replays one captured graph after "
                 f"{WARMUP_STEPS} eager steps; the optimizer steps eagerly (--cuda-graphs off for eager steps)")

    def _replay(self, x, labels, totals) -> torch.Tensor:
        self.static_x.copy_(x)
        self.static_labels.copy_(labels)
        self.graph.replay()
        self._optimize()
        totals[:3] += self.static_stats
        return self.static_loss.clone()  # the next replay overwrites the static one; callbacks may keep this

    def _give_up(self, why: str) -> None:
        self.failed = why
        self.status = f"eager: {why}"
        self.say(f"cuda graphs: eager steps from here on ({why})")


def record_in_graph(graph, step: Callable):
    """Capture `step` into the CUDA graph (on torch's side stream, in a private memory pool): its kernels are recorded,
    not run, and the tensors it returns are the buffers each replay writes."""
    with torch.cuda.graph(graph):
        return step()


@contextlib.contextmanager
def _syncs_warned(on_cuda: bool):
    """CUDA's sync debug mode at "warn" for the block: every synchronising call warns, naming itself."""
    if not on_cuda:
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
