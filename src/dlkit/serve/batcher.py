"""Micro-batching: one dedicated inference thread takes items from a queue and runs them together.

Why one thread: a torch (or onnxruntime) call per request in a thread pool gives every pool thread its own
intra-op threads, and 40 of those oversubscribe a 2-core CPU. Here exactly one thread runs the model, with a fixed
thread count, and requests that arrive together share one forward pass. The worker waits at most `max_wait_ms` for a
batch to fill, and only while more items are known to be on their way (announced with `expect`), so a lone request
is never held back.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Sequence

_STOP = object()
_WAKE = object()  # queued when expected items are withdrawn, so a worker waiting for them stops waiting


class Batcher:
    """Run `run_batch(items) -> results` (same length, same order) on one thread, over batches of queued items.

    Args:
        run_batch: called on the worker thread only.
        max_batch: items run together at most.
        max_wait_ms: how long the first item of a batch may wait for company.
        on_start: called once on the worker thread before anything runs (sets its thread count).
    """

    def __init__(self, run_batch: Callable[[list], Sequence], max_batch: int, max_wait_ms: float,
                 on_start: Callable[[], None] | None = None):
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000
        self._queue: queue.Queue = queue.Queue()
        self._expected = 0  # items announced by requests still decoding
        self._lock = threading.Lock()
        self.batches: deque[int] = deque(maxlen=1000)  # sizes of the latest batches run, for /health and tests
        self.batches_run = self.items_run = 0
        self._thread = threading.Thread(target=self._loop, args=(on_start,), name="dlkit-inference", daemon=True)
        self._thread.start()

    def expect(self, n: int) -> None:
        """n items will be submitted soon: worth waiting for."""
        with self._lock:
            self._expected += n

    def withdraw(self, n: int) -> None:
        """n expected items will not come after all (their request failed or gave up)."""
        if n > 0:
            with self._lock:
                self._expected = max(0, self._expected - n)
            self._queue.put(_WAKE)

    def submit(self, item: Any) -> Future:
        """Queue one item (counting it off the expected ones); the future holds its result or exception."""
        future: Future = Future()
        with self._lock:
            self._expected = max(0, self._expected - 1)
        self._queue.put((item, future))
        return future

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 30) -> None:
        """Run what is queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the worker thread --

    def _loop(self, on_start) -> None:
        if on_start:
            on_start()
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if first is _WAKE:
                continue
            batch, stop = self._fill([first])
            self._run([(item, f) for item, f in batch if f.set_running_or_notify_cancel()])  # timed-out ones skip
            if stop:
                return

    def _fill(self, batch: list) -> tuple[list, bool]:
        """Add queued items until the batch is full, the wait is over, or nothing more is coming."""
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or self._expected == 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            if item is not _WAKE:
                batch.append(item)
        return batch, False

    def _run(self, batch: list) -> None:
        if not batch:
            return
        try:
            results = self.run_batch([item for item, _ in batch])
        except BaseException as e:  # noqa: BLE001 - handed to the waiting requests, which answer with JSON
            for _, future in batch:
                future.set_exception(e)
            return
        self.batches.append(len(batch))
        self.batches_run += 1
        self.items_run += len(batch)
        for (_, future), result in zip(batch, results):
            future.set_result(result)
