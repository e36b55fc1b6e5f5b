"""ONNX export: every registered image model, table models and a learner's own network exported, checked against
PyTorch and run at batch 1 and 8 by OnnxModel from the file alone; metadata, int8, the CLI, and each refusal."""
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakedata import make_class_folders
from PIL import Image

import dlkit
from dlkit.cli.main import main
from dlkit.data.spec import PreprocessSpec
from dlkit.errors import UserError
from dlkit.infer.tabular import TablePredictor
from dlkit.models import MODELS, create_model
from dlkit.storage import save_tensors

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install 'dlkit[export]'")
pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'dlkit[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'dlkit[export]'")

from dlkit.export.onnx import OnnxModel, compare, export_onnx  # noqa: E402

CLASSES = ("cat", "dog")
# options that keep the big networks small (their dense heads are 4096 wide by default); a model registered later
# and not listed here is still exported, with its defaults
SMALL = {"mlp": {"hidden": 16}, "alexnet": {"hidden": 32}, "vgg11": {"width": 0.125, "hidden": 32},
         "resnet18": {"width": 0.125}}
FAST = dict(epochs=1, batch_size=8, tensorboard=False, report=False, workers=0, disk_cache=False, quiet=True)
HYMENOPTERA = Path(__file__).resolve().parents[3] / "shared" / "data" / "hymenoptera" / "val"


@pytest.fixture(scope="module", autouse=True)
def _exporter_table_built_once():
    """The dynamo exporter rebuilds its table of ~500 ATen -> ONNX functions on every call (about 1 s of CPU spent
    parsing their source) and never changes it (we pass no custom translations): built once here, this file's ~20
    exports take ~15 s less. Every export still runs the real exporter end to end."""
    import functools

    from torch.onnx._internal.exporter import _registration

    build = getattr(getattr(_registration, "ONNXRegistry", None), "from_torchlib", None)
    if build is None:  # another torch: no shortcut, just slower
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        cached = classmethod(functools.lru_cache(None)(build.__func__))
        patch.setattr(_registration.ONNXRegistry, "from_torchlib", cached)
        yield


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("images") / "data", CLASSES, per_class=6, size=12)


@pytest.fixture(scope="module")
def trained(image_data, tmp_path_factory):
    """A real run folder (config.yaml, summary.json, checkpoints) of lenet-modern on the fake images."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    return dlkit.train(data=str(image_data), model="lenet-modern", image_size=12, out=str(out), **FAST).dir


@pytest.fixture(scope="module")
def exported(trained):
    """The trained run exported once, to its default place."""
    return dlkit.export_onnx(dlkit.load(trained, device="cpu"))


def image_run(root: Path, name: str, data: Path | str) -> Path:
    """A run folder holding an untrained model's checkpoint, as training would write it (no training: fast)."""
    size = max(12, MODELS.entry(name).info.get("min_size", 8))
    args = {"in_channels": 3, "num_classes": len(CLASSES), "image_size": size, **SMALL.get(name, {})}
    model = create_model(name, **args)
    spec = PreprocessSpec(size, 3, (0.45, 0.5, 0.55), (0.25, 0.2, 0.3), CLASSES)
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"data: {data}\n")
    save_tensors(run / "checkpoints" / "best.safetensors", model.state_dict(),
                 {"model": name, "model_args": args, "spec": spec.to_dict(), "modality": "image",
                  "task": {"name": "classification"}, "config": {"data": str(data), "val_split": 0.5, "seed": 0}})
    return run


def images(n: int, spec, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8,
                         generator=gen)


# ---- every registered image model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS.names())
def test_every_image_model_exports_and_runs_at_batch_1_and_8(name, image_data, tmp_path):
    run = image_run(tmp_path, name, image_data)
    predictor = dlkit.load(run, device="cpu")
    result = dlkit.export_onnx(predictor)
    assert result.path == run / "export" / "model.onnx" and result.path.is_file()
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["model.onnx"]  # self-contained: no data files
    assert result.size_bytes == result.path.stat().st_size
    assert result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0
    assert result.sample_source.endswith(f"validation images of {image_data}") and result.samples == 6
    proto = onnx.load(str(result.path))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # dynamic, not frozen at the traced 2
    assert result.opset == 20 == next(o.version for o in proto.opset_import if o.domain == "")  # the default
    model = OnnxModel(result.path, threads=1)
    for n in (1, 8):
        x = images(n, predictor.spec, seed=n)
        got = model.probabilities(x)
        assert got.shape == (n, len(CLASSES))
        torch.testing.assert_close(got, predictor.probabilities(x), atol=1e-5, rtol=1e-4)


def test_a_learners_own_network_exports(image_data, tmp_path):
    (tmp_path / "mynet.py").write_text(textwrap.dedent('''
        from torch import nn

        class MyNet(nn.Module):
            def __init__(self, num_classes=10):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                          nn.Flatten(), nn.Linear(32, num_classes))

            def forward(self, x):
                return self.body(x)
    '''))
    sys.path.insert(0, str(tmp_path))
    try:
        import mynet
    finally:
        sys.path.remove(str(tmp_path))
    run = dlkit.train(model=mynet.MyNet(num_classes=2), data=str(image_data), image_size=12,
                      out=str(tmp_path / "run"), **FAST)
    result = dlkit.export_onnx(dlkit.load(run.dir, device="cpu", trust_code=True), tmp_path / "mine.onnx")
    assert result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0
    model = OnnxModel(tmp_path / "mine.onnx")
    assert model.meta["model_source"]["name"] == "MyNet" and model.probabilities(images(3, model.spec)).shape == (3, 2)


# ---- the file alone is enough --------------------------------------------------------------------------------------

def test_metadata_round_trip_carries_spec_classes_task_and_training_metrics(trained, exported):
    predictor = dlkit.load(trained, device="cpu")
    assert exported.path == trained / "export" / "model.onnx"
    props = {p.key: json.loads(p.value) for p in onnx.load(str(exported.path)).metadata_props}
    summary = json.loads((trained / "summary.json").read_text())
    assert props["format"] == "dlkit-onnx" and props["dlkit_version"] == dlkit.__version__
    assert props["modality"] == "image" and props["task"] == {"name": "classification"}
    assert props["classes"] == list(CLASSES) and PreprocessSpec.from_dict(props["spec"]) == predictor.spec
    assert props["opset"] == exported.opset and props["model"] == "lenet-modern"
    assert props["metrics"]["best_metrics"] == summary["best_metrics"]
    assert props["input"]["dtype"] == "uint8" and props["input"]["shape"] == ["batch", 3, 12, 12]
    model = OnnxModel(exported.path)
    assert model.modality == "image" and model.classes == CLASSES and model.spec == predictor.spec
    assert model.meta["metrics"] == props["metrics"]


def test_onnx_probabilities_match_the_predictor_on_image_files(trained, exported, image_data, tmp_path):
    jpegs = []  # made here, so the JPEG decoder's path is checked whether or not the shared data is present
    for i, size in enumerate([(12, 12), (40, 30), (17, 64), (300, 200)]):
        pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.jpg", quality=90)
        jpegs.append(tmp_path / f"{i}.jpg")
    files = sorted(image_data.rglob("*.png"))[::3] + jpegs + sorted(HYMENOPTERA.rglob("*.jpg"))[:2]
    predictor = dlkit.load(trained, device="cpu")
    model = OnnxModel(exported.path)
    pixels = torch.stack([predictor.to_uint8(f) for f in files])
    torch.testing.assert_close(model.probabilities(pixels), predictor.predict_proba(files), atol=1e-5, rtol=1e-4)
    assert [p[0][0] for p in predictor.predict(files)] == [CLASSES[i] for i in model.probabilities(pixels).argmax(1)]


# ---- tables --------------------------------------------------------------------------------------------------------

def house_table(n=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n)
    price = np.exp(3 + x1 - 0.5 * x2 + (color == "red") + rng.normal(0, 0.1, n))
    return pd.DataFrame({"house_id": np.arange(1000, 1000 + n), "x1": x1, "x2": x2, "color": color, "price": price})


def flower_table(n=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.repeat(["setosa", "versicolor", "virginica"], n // 3)
    size = np.repeat([1.0, 4.0, 7.0], n // 3) + rng.normal(0, 0.3, n)
    return pd.DataFrame({"size": size, "shade": rng.choice(["light", "dark"], n), "label": label})


@pytest.mark.parametrize("frame,target,options", [
    (house_table(), "price", {"categorical_encoding": "embedding"}),   # regression, log target, embedded codes
    (flower_table(), "label", {"model": "mlp"}),                       # classification, one-hot
], ids=["regression", "classification"])
def test_a_table_model_round_trips_through_onnx_predict_frame(frame, target, options, tmp_path):
    frame.to_csv(tmp_path / "t.csv", index=False)
    run = dlkit.train(data=str(tmp_path / "t.csv"), target=target, out=str(tmp_path / "run"), **{**FAST, **options})
    predictor = dlkit.load(run.dir, device="cpu")
    result = dlkit.export_onnx(predictor)
    assert result.max_abs_diff <= 1e-4 and result.modality == "table" and "validation rows" in result.sample_source
    model = OnnxModel(result.path)
    assert model.modality == "table" and model.spec == predictor.spec and model.classes == predictor.classes
    new = frame.drop(columns=[target]).head(9).copy()
    new.iloc[0, 1] = np.nan                               # a missing number
    new.loc[new.index[1], new.columns[-1]] = "purple"     # an unseen category
    new["extra"] = 1                                      # a column the model never saw
    for n in (1, 8):
        got, got_notes = model.predict_frame(new.head(n))
        want, want_notes = predictor.predict_frame(new.head(n))
        assert list(got.columns) == list(want.columns) and got_notes == want_notes and len(got) == n
        if predictor.spec.task == "regression":
            np.testing.assert_allclose(got[target], want[target], rtol=1e-4)
        else:
            assert got[target].tolist() == want[target].tolist()
            np.testing.assert_allclose(got["probability"], want["probability"], atol=1e-5)
    assert any("unseen categories" in n for n in got_notes) and any("extra" in n for n in got_notes)
    folds = TablePredictor([predictor.model] * 2, [predictor.spec] * 2, predictor.meta, predictor.device, None)
    with pytest.raises(UserError, match="a CV folder holds one model per fold"):  # refused before any work
        dlkit.export_onnx(folds, tmp_path / "cv.onnx")


# ---- int8 ----------------------------------------------------------------------------------------------------------

def test_int8_quantization_reports_accuracy_and_size_change(trained, exported, image_data):
    result = dlkit.export_onnx(dlkit.load(trained, device="cpu"), quantize="int8")
    q = result.quantized
    assert result.path == trained / "export" / "model.int8.onnx" and result.size_bytes == result.path.stat().st_size
    assert q["metric"] == "accuracy" and q["samples"] == result.samples and 0 <= q["int8"] <= 1
    assert q["change"] == pytest.approx(q["int8"] - q["fp32"]) and q["size_bytes"] < q["fp32_size_bytes"]
    assert result.max_abs_diff <= 1e-4  # the fp32 graph was checked before quantizing
    model = OnnxModel(result.path)
    assert model.meta["quantization"]["scheme"] == "int8" and model.classes == CLASSES
    assert model.probabilities(images(2, model.spec)).shape == (2, 2)
    fp32, int8 = onnx.load(str(exported.path)), onnx.load(str(result.path))
    ops = [node.op_type for node in int8.graph.node]
    # the linear layers quantized, the convolutions left in fp32 (onnxruntime's int8 Conv ran LeNet ~4x slower)
    assert ops.count("MatMulInteger") == [n.op_type for n in fp32.graph.node].count("Gemm") == 3
    assert ops.count("Conv") == 2 and not {"ConvInteger", "QLinearConv"} & set(ops)
    # and it answers as the fp32 graph does: the same class for every image (both classes occur), logits that move
    # together on random inputs (a quantizer that zeroed the weights would answer one class, with constant logits)
    predictor = dlkit.load(trained, device="cpu")
    files = sorted(image_data.rglob("*.png"))
    pixels = torch.stack([predictor.to_uint8(f) for f in files])
    want = OnnxModel(exported.path).probabilities(pixels).argmax(1)
    assert set(want.tolist()) == {0, 1} and model.probabilities(pixels).argmax(1).tolist() == want.tolist()
    x = images(256, model.spec).numpy()
    margins = [np.diff(logits(path, x), axis=1)[:, 0] for path in (exported.path, result.path)]
    assert np.corrcoef(*margins)[0, 1] > 0.99


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# ---- the CLI -------------------------------------------------------------------------------------------------------

def test_cli_prints_the_figures_and_refuses_to_overwrite(image_data, tmp_path, capsys):
    run = image_run(tmp_path, "softmax", image_data)
    out = tmp_path / "cli.onnx"
    out.write_bytes(b"someone's file")
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--overwrite" in err
    assert out.read_bytes() == b"someone's file"
    checkpoint = run / "checkpoints" / "best.safetensors"
    assert main(["export", str(checkpoint), "--out", str(out), "--overwrite", "--quantize", "int8",
                 "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert [(o.domain, o.version) for o in onnx.load(str(out)).opset_import if o.domain == ""] == [("", 18)]
    for words in (str(out), "opset:", "max abs diff:", "top-1 agreement:  100.00%", "size:", "validation images",
                  "int8:", "val accuracy:"):
        assert words in printed, printed
    assert OnnxModel(out).meta["quantization"]["scheme"] == "int8"


@pytest.mark.parametrize("argv,message", [
    (["export", "no/such/run"], "does not exist"),
    (["export", "RUN", "--opset", "9"], "--opset must be between 18"),
    (["export", "RUN", "--out", "FOLDER"], "is a folder"),
])
def test_cli_bad_input_is_a_one_line_error(argv, message, trained, tmp_path, capsys):
    argv = [str(trained) if a == "RUN" else str(tmp_path) if a == "FOLDER" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_missing_extra_names_the_pip_command(trained, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    assert main(["export", str(trained)]) == 2
    assert "pip install 'dlkit[export]'" in capsys.readouterr().err


# ---- refusals ------------------------------------------------------------------------------------------------------

def test_a_parity_failure_is_refused_and_writes_nothing(image_data, tmp_path, monkeypatch):
    import dlkit.export.onnx as exporter

    run = image_run(tmp_path, "softmax", image_data)

    honest = exporter.run_bytes
    monkeypatch.setattr(exporter, "run_bytes", lambda data, x, threads=None: honest(data, x, threads) + 2e-4)
    with pytest.raises(UserError, match=r"does not match PyTorch on 6 samples \(max abs diff 0.0002.*nothing was"):
        export_onnx(dlkit.load(run, device="cpu"), tmp_path / "sub" / "bad.onnx")
    assert not (tmp_path / "sub").exists()


def test_top1_flips_fail_but_ties_within_tolerance_do_not():
    reference = torch.tensor([[2.0, 1.0], [1.0, 1.0 + 1e-6]])
    assert compare(reference, reference, 1e-4, True) == (0.0, 1.0, 0)
    tie = torch.tensor([[2.0, 1.0], [1.0 + 2e-6, 1.0]])         # the near-tie row flips: not a failure
    assert compare(reference, tie, 1e-4, True)[1:] == (0.5, 0)
    flipped = torch.tensor([[1.0, 2.0], [1.0, 1.0 + 1e-6]])     # a clear winner flips: a failure
    assert compare(reference, flipped, 1e-4, True)[2] == 1
    assert compare(reference, reference[:1], 1e-4, True)[0] == float("inf")  # a wrong shape never passes


def test_unreadable_data_falls_back_to_random_inputs_with_a_note(tmp_path):
    run = image_run(tmp_path, "softmax", tmp_path / "gone")
    result = dlkit.export_onnx(dlkit.load(run, device="cpu"), tmp_path / "s.onnx")
    assert "random images" in result.sample_source and any("random" in n for n in result.notes)
    assert result.max_abs_diff <= 1e-4 and (tmp_path / "s.onnx").is_file()


def test_onnx_model_refuses_files_it_cannot_use(exported, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        OnnxModel(tmp_path / "nothing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")
    h = onnx.helper
    value = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "plain", [value],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]), str(tmp_path / "plain.onnx"))
    with pytest.raises(UserError, match="not written by `dlkit export`"):
        OnnxModel(tmp_path / "plain.onnx")
    model = OnnxModel(exported.path)
    with pytest.raises(UserError, match=r"takes uint8 images Nx3x12x12"):
        model.probabilities(torch.zeros(1, 3, 12, 12))
    with pytest.raises(UserError, match="holds a model for images; predict_frame"):
        model.predict_frame(pd.DataFrame({"a": [1]}))


def test_export_takes_a_run_and_the_old_method_says_where_export_went(image_data, tmp_path):
    run = dlkit.train(data=str(image_data), model="softmax", epochs=1, image_size=8, out=str(tmp_path / "r"),
                      quiet=True, tensorboard=False, report=False, workers=0, disk_cache=False)
    result = dlkit.export_onnx(run, tmp_path / "from-run.onnx")
    assert result.path.is_file() and result.top1_agreement == 1.0
    with pytest.raises(dlkit.UserError, match=r"moved: call dlkit.export_onnx\(predictor, path"):
        run.load("cpu").export_onnx(tmp_path / "old.onnx")
