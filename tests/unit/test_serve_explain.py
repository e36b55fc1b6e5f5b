"""`dlkit serve`: /predict?explain=1 answers each image's predictions (the same as without it) and where the network
looked as a PNG data URL, through the same decode pool, batcher and guards; what cannot be explained is a 400."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="dlkit serve needs its extras: pip install 'dlkit[serve]'")
pytest.importorskip("captum", reason="explanations need Captum (the explain extra)")
from fastapi.testclient import TestClient  # noqa: E402

from dlkit.serve import ServeSettings, create_app, load_backend  # noqa: E402

SIZE = 16


def checkpoint(root, model: str):
    """A run folder holding a freshly initialised model: serving explanations does not depend on its training."""
    from dlkit.data.spec import PreprocessSpec
    from dlkit.models import create_model
    from dlkit.storage import save_tensors

    torch.manual_seed(0)
    args = {"in_channels": 3, "num_classes": 2, "image_size": SIZE}
    spec = PreprocessSpec(SIZE, 3, (0.5,) * 3, (0.25,) * 3, ("ant", "bee"))
    run = root / model
    (run / "checkpoints").mkdir(parents=True)
    save_tensors(run / "checkpoints" / "best.safetensors", create_model(model, **args).state_dict(),
                 {"model": model, "model_args": args, "spec": spec.to_dict(), "modality": "image",
                  "task": {"name": "classification"}, "config": {}})
    return run


def jpeg(seed: int, size=(40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def files(*blobs):
    return [("file", (f"{i}.jpg", blob, "image/jpeg")) for i, blob in enumerate(blobs)]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    backend = load_backend(checkpoint(tmp_path_factory.mktemp("serve"), "quick"))
    with TestClient(create_app(backend, ServeSettings(max_files=3))) as c:
        yield c


def test_explain_returns_a_png_data_url_beside_the_same_predictions(client):
    blobs = [jpeg(1), jpeg(2)]
    plain = client.post("/predict?topk=2", files=files(*blobs))
    explained = client.post("/predict?topk=2&explain=1", files=files(*blobs))
    assert plain.status_code == explained.status_code == 200, explained.text
    for p, e in zip(plain.json()["results"], explained.json()["results"]):
        assert [c["class"] for c in p["predictions"]] == [c["class"] for c in e["predictions"]]
        assert np.allclose([c["probability"] for c in p["predictions"]],
                           [c["probability"] for c in e["predictions"]], atol=1e-5)
        assert e["explanation_layer"] == "net.0" and "explanation" not in p
        head, data = e["explanation"].split(",", 1)
        assert head == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (SIZE, SIZE)


def test_explain_keeps_the_guards(client):
    response = client.post("/predict?explain=1", files=[("file", ("notes.txt", b"hello there", "text/plain"))])
    assert response.status_code == 415 and "error" in response.json()
    response = client.post("/predict?explain=1", files=files(*(jpeg(i) for i in range(4))))
    assert response.status_code == 413 and "max-files" in response.json()["error"]


def test_a_model_without_a_spatial_map_is_a_400_saying_why(tmp_path):
    backend = load_backend(checkpoint(tmp_path, "mlp"))
    with TestClient(create_app(backend, ServeSettings())) as c:
        response = c.post("/predict?explain=1", files=files(jpeg(1)))
        assert response.status_code == 400, response.text
        assert "no layer with a spatial map larger than 1x1" in response.json()["error"]
        assert c.post("/predict", files=files(jpeg(1))).status_code == 200  # plain predictions still work


def test_an_onnx_engine_is_refused_in_one_line():
    from dlkit.serve.explaining import Explainer
    from dlkit.serve.uploads import HttpError

    with pytest.raises(HttpError, match="needs the torch backend") as refused:
        Explainer(object(), "onnx").check()
    assert refused.value.status == 400


def test_the_page_has_the_toggle(client):
    page, script = client.get("/").text, client.get("/app.js").text
    assert 'id="explain"' in page and "show where it looked" in page
    assert "&explain=1" in script and "result.explanation" in script
    assert client.get("/info").json()["backend"] == "torch"  # the page shows the toggle for torch only
