"""ServeSettings: the service's knobs, each a `dlkit serve` flag, checked before anything loads."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import TTA_MODES, opt
from ..errors import require


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = opt(16, "images run in one forward pass at most")
    max_wait_ms: float = opt(2.0, "ms the first queued image waits for others to fill its batch (only while more "
                                  "are being decoded, so a lone request never waits)")
    max_upload_mb: float = opt(10.0, "MB per request, counted on the bytes as they arrive; larger requests get 413")
    max_in_flight: int = opt(64, "requests handled at once; more are answered 503 with Retry-After")
    timeout_s: float = opt(30.0, "seconds per request, from its first byte to its answer; slower ones get 504")
    topk: int = opt(5, "classes in each answer (a request may ask for another number with ?topk=K)")
    threads: int = opt(0, "intra-op threads of the one inference worker (0: the usable CPUs for torch, 1 for onnx, "
                          "as measured best)")
    decode_workers: int = opt(0, "threads decoding uploads (0: twice the usable CPUs, as measured best)")
    max_image_pixels: int | None = opt(None, "images with more pixels are refused with 413 (default: Pillow's "
                                             "decompression-bomb limit, about 89 million)")
    max_files: int = opt(64, "images per request at most")
    tta: str | None = opt(None, "test-time augmentation of a run folder or checkpoint: none, flip, shift or "
                                "flip-shift (default: the run's own; an ONNX file has its own built in)")

    def __post_init__(self):
        require(self.max_batch >= 1, f"--max-batch must be at least 1 (got {self.max_batch})")
        require(0 <= self.max_wait_ms <= 10_000, f"--max-wait-ms must be between 0 and 10000 (got {self.max_wait_ms})")
        require(self.max_upload_mb > 0, f"--max-upload-mb must be positive (got {self.max_upload_mb})")
        require(self.max_in_flight >= 1, f"--max-in-flight must be at least 1 (got {self.max_in_flight})")
        require(self.timeout_s > 0, f"--timeout-s must be positive (got {self.timeout_s})")
        require(self.topk >= 1, f"--topk must be at least 1 (got {self.topk})")
        require(self.threads >= 0 and self.decode_workers >= 0, "--threads and --decode-workers must be 0 (auto) or more")
        require(self.max_image_pixels is None or self.max_image_pixels > 0,
                f"--max-image-pixels must be positive (got {self.max_image_pixels})")
        require(self.max_files >= 1, f"--max-files must be at least 1 (got {self.max_files})")
        require(self.tta in (None, *TTA_MODES), f"--tta must be one of {', '.join(TTA_MODES)} (got {self.tta!r})")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def resolved_threads(self) -> int:
        from ..device import usable_cpus

        return self.threads or usable_cpus()

    def resolved_decode_workers(self) -> int:
        """Twice the CPUs by default: each decode holds the GIL for part of its time (Pillow's Python around libjpeg),
        so with one thread per CPU the CPUs sat partly idle; 4 threads on 2 CPUs served 1.05-1.16x the requests/s of
        2 at 8 and 32 clients (benchmarks/serve.py --grid), and a lone request uses one thread either way."""
        from ..device import usable_cpus

        return self.decode_workers or 2 * usable_cpus()
