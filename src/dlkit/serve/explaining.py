"""`/predict?explain=1`: Grad-CAM for uploaded images, on the same inference thread and batches as predictions.

An image to explain travels through the decode pool and the batcher like any other, wrapped in `ToExplain`; the
inference thread runs the plain ones as before and the explained ones through Captum (one forward and backward
for them together), then blends each map into its photo and encodes it as a PNG data URL (no figure: a
millisecond, where drawing one would hold the inference thread for a tenth of a second). So every guard (upload
size, pixels, files, in flight, timeout) applies unchanged.
"""
from __future__ import annotations

import base64
import io
import threading

from ..errors import UserError
from .uploads import HttpError


class ToExplain:
    """A decoded image (uint8 CxHxW) whose prediction should come with where the network looked."""

    __slots__ = ("image",)

    def __init__(self, image):
        self.image = image


class Explainer:
    """For one torch image engine: the layer, found once (a trial forward, on the first pool thread that asks)."""

    def __init__(self, engine, engine_name: str):
        self.engine, self.engine_name = engine, engine_name
        self._layer: str | None = None
        self._refusal: str | None = None
        self._lock = threading.Lock()

    def check(self) -> str:
        """The layer, or an HttpError(400) saying why this model cannot be explained here."""
        with self._lock:
            if self._layer is None and self._refusal is None:
                self._refusal = self._why_not()
        if self._refusal:
            raise HttpError(400, self._refusal)
        return self._layer

    def _why_not(self) -> str | None:
        if self.engine_name != "torch" or not hasattr(self.engine, "explain_layer"):
            return "explain=1 needs the torch backend (dlkit serve RUN --backend torch): an ONNX graph has no layers"
        try:
            from ..infer.explain import captum_attr

            captum_attr()
            self._layer = self.engine.explain_layer()
        except UserError as e:
            return f"explain=1: {e}"
        return None

    def run(self, items: list) -> list:
        """Probabilities for plain items; {"probabilities", "explanation", "layer"} for ToExplain ones."""
        import torch

        from ..infer.explain import explain_batch

        plain = [i for i, item in enumerate(items) if not isinstance(item, ToExplain)]
        asked = [i for i, item in enumerate(items) if isinstance(item, ToExplain)]
        results: list = [None] * len(items)
        if plain:
            probs = self.engine.probabilities(torch.stack([items[i] for i in plain])).tolist()
            for i, p in zip(plain, probs):
                results[i] = p
        explained = explain_batch(self.engine, torch.stack([items[i].image for i in asked]), layer=self._layer)
        for i, e in zip(asked, explained):
            results[i] = {"probabilities": e.probabilities.tolist(), "explanation": data_url(e), "layer": e.layer}
        return results


def data_url(explanation) -> str:
    """The photo with its heat map blended in, as a PNG data URL."""
    from PIL import Image

    from ..track.overlay import blend

    buffer = io.BytesIO()
    Image.fromarray(blend(explanation.image, explanation.map).permute(1, 2, 0).numpy()).save(buffer, "PNG",
                                                                                            compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
