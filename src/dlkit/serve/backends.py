"""What the service runs: an engine (torch eager or onnxruntime) behind one small interface per modality.

An engine offers `.spec`, `.classes` and, for images, `.probabilities(uint8 NxCxHxW) -> NxK`, for tables,
`.predict_frame(DataFrame) -> (DataFrame, notes)`; `dlkit.load` gives one for torch and `OnnxModel` for onnx. The
backend around it splits the work in two: `prepare` runs on the decode pool (no model call), `run_batch` on the one
inference thread only. The app never asks which modality or engine it has.
"""
from __future__ import annotations

import heapq
import io
import json
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..trust import CodeTrust
from ..registry import Registry
from .uploads import HttpError

ENGINES: Registry[Callable[..., tuple[Any, dict]]] = Registry("serving backend")
MODALITIES: Registry[type] = Registry("modality")


class _Backend:
    """What every backend holds: the engine (a Predictor or an OnnxModel), its spec and classes, and /info."""

    def __init__(self, engine, engine_name: str, info: dict):
        self.engine, self.engine_name, self.spec = engine, engine_name, engine.spec
        self.classes = tuple(engine.classes)
        task, described = self.describe()
        self.info = {**info, "task": task, "classes": list(self.classes), "input": described}


@MODALITIES.register("image")
class ImageBackend(_Backend):
    """Uploads decoded exactly as `dlkit predict` decodes the same files (data.images.load_image_bytes, the same
    decoders and pixels as load_image), answered with top-k."""

    modality = "image"

    def describe(self) -> tuple[str, dict]:
        return "classification", {"kind": "image", **self.spec.to_dict()}

    def explaining(self, item):
        """/predict?explain=1: the decoded image marked to be explained too (on the pool; the layer found once)."""
        from .explaining import Explainer, ToExplain

        if not hasattr(self, "_explainer"):
            self._explainer = Explainer(self.engine, self.engine_name)
        self._explainer.check()
        return ToExplain(item)

    def prepare(self, label: str, data: bytes):
        """Bytes -> uint8 CxHxW at the spec's size; refuses what is not an image, or too many pixels."""
        from ..data import fastdecode
        from ..data.images import ImageError, load_image_bytes

        if fastdecode.decoder_for(data[:fastdecode.HEAD_BYTES]) != "torchvision":  # else: a plain JPEG or PNG
            check_header(data, label)                                    # within the pixel limit, header read already
        try:
            return load_image_bytes(data, self.spec.channels, self.spec.image_size, label)
        except (ImageError, ValueError) as e:  # a truncated or corrupt file: its header read, its pixels did not
            raise HttpError(400, f"cannot decode the image {label}: {str(e).removeprefix(label + ': ')}") from None

    def sample(self) -> tuple[str, bytes]:
        """A JPEG to warm up on at start-up (decoders, imports, first forward), so the first request is not slow."""
        from PIL import Image

        side = self.spec.image_size * 2
        buffer = io.BytesIO()
        Image.new("RGB", (side, side), (120, 110, 100)).save(buffer, "JPEG")
        return "warm-up.jpg", buffer.getvalue()

    def run_batch(self, images: list) -> list[list[float]]:
        import torch

        if hasattr(self, "_explainer"):  # some request asked for explain=1
            from .explaining import ToExplain

            if any(isinstance(i, ToExplain) for i in images):
                return self._explainer.run(images)
        return self.engine.probabilities(torch.stack(images)).tolist()

    def respond(self, labels: list[str], results: list[list[float]], topk: int) -> dict:
        """{"results": [{"file", "predictions": [{"class", "probability"}, ...]}, ...]}: top-k, plain Python."""
        return {"results": [self._result(label, probs, topk) for label, probs in zip(labels, results)]}

    def _result(self, label: str, probs, topk: int) -> dict:
        if isinstance(probs, dict):  # explained: the overlay as a PNG data URL beside the predictions
            return {"file": label, "predictions": self._top(probs["probabilities"], topk),
                    "explanation": probs["explanation"], "explanation_layer": probs["layer"]}
        return {"file": label, "predictions": self._top(probs, topk)}

    def _top(self, probs: list[float], k: int) -> list[dict]:
        best = heapq.nlargest(min(k, len(probs)), range(len(probs)), key=probs.__getitem__)
        return [{"class": self.classes[i], "probability": probs[i]} for i in best]


def check_header(data: bytes, label: str) -> None:
    """415 unless Pillow recognises an image; 413 over the pixel limit, known from the header before any decoding."""
    from PIL import Image, UnidentifiedImageError

    from ..data.images import NamedBytes

    try:
        with Image.open(NamedBytes(data, label)) as probe:  # reads the header only
            pixels, size = probe.width * probe.height, "{}x{} = ".format(*probe.size)
    except Image.DecompressionBombError as e:  # over twice the limit: Pillow refuses it already at open
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels, size = (int(found.group(1)) if found else 0), ""
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        why = "an empty file" if not data else (f"Pillow recognises no image format in its {len(data):,} bytes"
                                                if isinstance(e, UnidentifiedImageError)
                                                else f"its header is broken: {str(e)[:80]}")
        raise HttpError(415, f"{label}: not an image ({why}); send a JPEG, PNG, WebP, GIF, BMP, TIFF or PPM file") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and (pixels > limit or not pixels):
        raise HttpError(413, f"{label}: image too large ({size}{pixels:,} pixels; this server takes at most "
                             f"{limit:,}); send a smaller image (the server's owner may raise --max-image-pixels)")


@MODALITIES.register("table")
class TableBackend(_Backend):
    """JSON rows in, the table model's predictions out (a DataFrame is built here: a request never names a file)."""

    modality = "table"

    def describe(self) -> tuple[str, dict]:
        return self.spec.task, table_input(self.spec)

    def prepare(self, label: str, rows: list[dict]):
        """JSON rows -> a DataFrame of the model's columns: a key left out is a missing value, an unknown key a 400."""
        from ..infer.tabular import rows_frame

        try:
            return rows_frame(rows, self.spec, "the request")
        except UserError as e:
            raise HttpError(400, str(e)) from None

    def sample(self) -> None:
        return None  # no rows to make up: the first request warms up

    def run_batch(self, frames: list) -> list:
        """Each request's rows on their own (their notes are theirs); a bad table fails only its own request."""
        results = []
        for frame in frames:
            try:
                out, notes = self.engine.predict_frame(frame)
                results.append({"predictions": json.loads(out.to_json(orient="records")), "notes": list(notes)})
            except UserError as e:
                results.append(HttpError(400, str(e).replace("the table", "the request")))
        return results

    def respond(self, labels: list[str], results: list[dict], topk: int) -> dict:
        """{"predictions": [row, ...], "notes": [...]}: one table per request."""
        return results[0]


def table_input(spec) -> dict:
    """The columns a page's form needs: name, kind and, for categories, the values seen in training."""
    columns = []
    for c in spec.columns:
        column = {"name": c["name"], "kind": c["kind"]}
        if c["kind"] == "categorical":
            column["choices"] = [v for v in c["vocab"] if not str(v).startswith("\0")][:500]
        columns.append(column)
    return {"kind": "table", "columns": columns, "target": spec.target, "id_column": spec.id_column}


# ---- engines: where the model comes from ---------------------------------------------------------------------------

def _usable_cpus() -> int:
    from ..device import usable_cpus

    return usable_cpus()


# auto_threads: the intra-op threads when --threads is 0. onnxruntime gets 1: with 2, its pool (spinning between
# runs) took the CPU the decode threads needed, and at 32 clients served 0.62x the requests/s of 1 thread (measured
# with benchmarks/serve.py on 2 cores); torch's worker did best with all the usable CPUs (1 thread: 0.91x).
@ENGINES.register("torch", help="PyTorch eager on the checkpoint's own model", auto_threads=_usable_cpus)
def torch_engine(source: Path, threads: int, device: str, trust: CodeTrust = CodeTrust(),
                 tta: str | None = None) -> tuple[Any, dict]:
    from ..infer import load
    from ..infer.predictor import run_dir_of

    if source.suffix.lower() == ".onnx":
        raise UserError(f"{source} is an ONNX file; serve it with --backend onnx, or pass the run folder for torch")
    predictor = load(source, device=device, model_code=trust.model_code, trust_code=trust.everything, tta=tta)
    if getattr(predictor, "modality", "image") == "image" and str(predictor.device) == "cpu":
        prefer_channels_last(predictor)
    meta = predictor.meta
    return predictor, {"model": meta.get("model"), "source": _source_name(source),
                       "metrics": training_metrics(run_dir_of(predictor.path) if predictor.path else None, meta)}


def prefer_channels_last(predictor) -> None:
    """Convolution weights in channels_last (NHWC): oneDNN runs a small CNN's batch of 8-16 in half the time on the
    CPU (`quick`, 1 thread, measured). Kept only if a sample batch gets the same probabilities (a model that calls
    .view on its activations fails on NHWC, and then stays as it was)."""
    import torch

    spec = predictor.spec
    sample = torch.randint(0, 256, (4, spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    before = predictor.probabilities(sample)
    predictor.model.to(memory_format=torch.channels_last)
    try:
        same = torch.allclose(predictor.probabilities(sample), before, rtol=0, atol=1e-5)
    except RuntimeError:
        same = False
    if not same:
        predictor.model.to(memory_format=torch.contiguous_format)


@ENGINES.register("onnx", help="onnxruntime on an exported .onnx file (a run folder is exported first)",
                  auto_threads=lambda: 1)
def onnx_engine(source: Path, threads: int, device: str, trust: CodeTrust = CodeTrust(),
                tta: str | None = None) -> tuple[Any, dict]:
    from ..export import OnnxModel  # both raise UserError naming pip install 'dlkit[export]' when it is missing

    source_name = _source_name(source)
    if source.suffix.lower() != ".onnx":
        source = _export_to_temp(source, trust, tta)
    elif tta is not None:
        raise UserError(f"--tta applies to a run folder or checkpoint; {source.name} was exported with its own "
                        "test-time augmentation (or none) inside the graph: export again with `dlkit export --tta`")
    model = OnnxModel(source, threads=threads)
    meta = model.meta
    metrics = meta.get("metrics") or {}
    if isinstance(metrics.get("data"), str) and "/" in metrics["data"]:
        metrics = {**metrics, "data": Path(metrics["data"]).name}
    return model, {"model": meta.get("model") or source.stem, "source": source_name, "metrics": metrics}


def _export_to_temp(source: Path, trust: CodeTrust, tta: str | None = None) -> Path:
    """A run or checkpoint exported to a temporary .onnx (checked against PyTorch first), removed at exit."""
    import atexit
    import shutil
    import tempfile

    from ..export import export_onnx
    from ..infer import load

    folder = Path(tempfile.mkdtemp(prefix="dlkit-serve-"))
    atexit.register(shutil.rmtree, folder, True)
    predictor = load(source, device="cpu", model_code=trust.model_code, trust_code=trust.everything, tta=tta)
    return Path(export_onnx(predictor, folder / "model.onnx").path)


def _source_name(source: Path) -> str:
    """What /info says the model came from: the run folder's or file's name, never a full path on this machine."""
    return source.resolve().name


def training_metrics(run_dir: Path | None, meta: dict) -> dict:
    """The run's summary (best epoch and its validation metrics) when its folder is there, else the checkpoint's."""
    summary = run_dir / "summary.json" if run_dir else None
    if summary and summary.is_file():
        s = json.loads(summary.read_text())
        keep = ("data", "epochs", "best_epoch", "monitor", "best_value", "best_metrics", "train_samples", "val_samples")
        kept = {k: s[k] for k in keep if k in s}
        if isinstance(kept.get("data"), str) and "/" in kept["data"]:  # a folder on the training machine: its name
            kept["data"] = Path(kept["data"]).name
        return kept
    metrics = meta.get("metrics") or {}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("images_per")}


def load_backend(source: str | Path, backend: str = "torch", threads: int = 0, device: str = "cpu",
                 trust: CodeTrust | None = None, tta: str | None = None):
    """A served model: the engine named by `backend` ("torch" or "onnx") wrapped for its modality; threads 0 means
    the engine's own default (see auto_threads above).

    A .onnx file needs backend "onnx"; a run folder or checkpoint may use either (onnx exports it first,
    checked against PyTorch). `trust`: the user's word on the code a checkpoint names (dlkit/trust.py)."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source} does not exist; pass a run folder, a checkpoint .safetensors or a .onnx file")
    entry = ENGINES.entry(backend)
    engine, info = entry.obj(source, threads or entry.info["auto_threads"](), device, trust or CodeTrust(), tta)
    modality = getattr(engine, "modality", "image")
    return MODALITIES.get(modality)(engine, backend, {"backend": backend, "modality": modality, **info})
