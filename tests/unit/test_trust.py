"""A file from someone else never runs code: crafted checkpoints and run folders, one per field that names code,
through predict, eval, serve's loader, export, --resume and --resume-weights-only. A canary in each payload must
never fire, no module outside the standard library may be newly imported (checked in a fresh process, after the
same paths ran once on an honest checkpoint), and each error is one line. With --trust-code the learner's own
network loads (tests/unit/test_own_models.py predicts with the course's Tudui that way)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlkit
from dlkit.errors import UserError
from dlkit.storage import load_tensors, save_tensors
from fakedata import make_class_folders

CANARY_MODULE = "dlkit_canary_net"


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A real run on tiny data, and the canary code a crafted file may name: a module on PYTHONPATH and a .py
    file, each writing a file the moment it is imported."""
    root = tmp_path_factory.mktemp("trust")
    data = make_class_folders(root / "imgs", ("ants", "bees"), per_class=4, size=12)
    run = dlkit.train(data=str(data), model="softmax", epochs=1, image_size=8, out=str(root / "run"), quiet=True,
                      tensorboard=False, report=False, workers=0, disk_cache=False)
    code = root / "code"
    code.mkdir()
    for name in (f"{CANARY_MODULE}.py", "evil.py"):
        (code / name).write_text(textwrap.dedent(f"""
            import pathlib
            pathlib.Path({str(root / 'CANARY')!r}).write_text({name!r})
            from torch import nn
            class Net(nn.Sequential):  # the honest softmax run's layout, so its weights fit
                def __init__(self, num_classes=2, **kw):
                    super().__init__(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))
            """))
    return {"root": root, "data": data, "run": run.dir, "code": code, "canary": root / "CANARY",
            "image": next((data / "bees").iterdir())}


def craft(honest, name: str, change) -> Path:
    """A copy of the honest run folder whose best checkpoint's metadata `change` rewrote (digest recomputed:
    the digest finds damage, not intent)."""
    folder = honest["root"] / f"crafted-{name}"
    shutil.copytree(honest["run"], folder)
    for file in (folder / "checkpoints").glob("*.safetensors"):
        if file.name.endswith(".state.safetensors"):
            continue
        tensors, meta = load_tensors(file)
        change(meta, honest)
        save_tensors(file, tensors, meta)
    return folder


def _module_source(meta, h):
    meta["model"], meta["model_source"] = f"{CANARY_MODULE}:Net", {"module": CANARY_MODULE, "name": "Net"}


def _os_system(meta, h):
    meta["model"], meta["model_source"] = "os:system", {"module": "os", "name": "system"}
    meta["model_args"] = {**meta["model_args"], "command": f"touch {h['canary']}"}


def _file_source(meta, h):
    evil = str(h["code"] / "evil.py")
    meta["model"], meta["model_source"] = f"{evil}:Net", {"file": evil, "name": "Net", "sha256": "0" * 64}


def _models_from(meta, h):
    meta["config"]["models_from"] = [str(h["code"] / "evil.py")]


def _hostile_args(meta, h):
    meta["model_args"] = {**meta["model_args"], "command": f"touch {h['canary']}"}


def _not_torchvision(meta, h):
    meta["model"], meta["model_args"] = "tv:os.system", {"in_channels": 3, "num_classes": 2, "image_size": 8}


PAYLOADS = {"module": _module_source, "os-system": _os_system, "file": _file_source, "models-from": _models_from,
            "hostile-args": _hostile_args, "not-torchvision": _not_torchvision}
EXPECTED = {"module": f"import the module {CANARY_MODULE} and call its Net", "os-system": "names the module 'os'",
            "file": "evil.py and call its Net", "models-from": "evil.py (models_from)",
            "hostile-args": "it takes no argument 'command'", "not-torchvision": "unknown torchvision model 'os.system'"}

# Runs in a fresh process: every path once on the honest run (so what they import legitimately is imported), then
# each crafted folder through each path; prints what each said and which modules appeared meanwhile.
PROBE = r"""
import io, json, sys, contextlib
from pathlib import Path
from dlkit.cli.main import main
from dlkit.serve.backends import load_backend
from dlkit.errors import UserError

honest, image, out, crafted = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])

def paths(folder, tag):
    ckpt = str(Path(folder) / "checkpoints" / "best.safetensors")
    return {
        "predict": lambda: main(["predict", ckpt, image]),
        "eval": lambda: main(["eval", ckpt]),
        "export": lambda: main(["export", ckpt, "--out", str(out / f"{tag}.onnx")]),
        "serve": lambda: load_backend(ckpt, "torch") and 0,
        "resume": lambda: main(["train", "--resume", folder, "--epochs", "2", "-q"]),
    }

def attempt(fn):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = fn()
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 2
    return code, err.getvalue()

warm = {name: attempt(fn)[0] for name, fn in paths(honest, "honest").items()}
before = set(sys.modules)
said = {f"{payload}/{name}": attempt(fn) for payload, folder in crafted.items()
        for name, fn in paths(folder, payload).items()}
new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] not in sys.stdlib_module_names)
print(json.dumps({"warm": warm, "said": said, "new_modules": new}))
"""


def test_crafted_files_never_run_code_on_any_path(honest, tmp_path):
    crafted = {}
    for name, change in PAYLOADS.items():
        folder = craft(honest, name, change)
        config = yaml.safe_load((folder / "config.yaml").read_text())
        if name == "models-from":  # the run folder's config names code too: what --resume reads
            config["models_from"] = [str(honest["code"] / "evil.py")]
        elif name in ("module", "file", "os-system"):
            config["model"] = json.loads(json.dumps(load_tensors(folder / "checkpoints/best.safetensors")[1]["model"]))
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        crafted[name] = str(folder)
    env = {"PYTHONPATH": str(honest["code"]), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(honest["run"]), str(honest["image"]), str(tmp_path),
                           json.dumps(crafted)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["warm"].values()) == {0}, result["warm"]  # every path works on the honest run
    assert not honest["canary"].exists(), honest["canary"].read_text()
    assert result["new_modules"] == []  # nothing the files named was imported, nor anything else outside stdlib
    for key, (code, err) in result["said"].items():
        payload, path = key.split("/")
        if payload == "hostile-args" and path == "resume":
            continue  # config.yaml was left honest here: --resume of it trains (the checkpoint's args are unused)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (key, err)
        if path != "resume" or payload in ("module", "file", "models-from", "os-system"):
            expected = EXPECTED[payload] if path != "resume" or payload != "os-system" else "import the module os"
            assert expected in lines[0], (key, lines[0])


def test_resume_weights_only_reads_tensors_alone(honest, tmp_path, capsys):
    from dlkit.cli.main import main

    folder = craft(honest, "weights-only", _module_source)
    code = main(["train", "--data", str(honest["data"]), "--model", "softmax", "--image-size", "8", "--epochs", "1",
                 "--resume-weights-only", str(folder), "--out", str(tmp_path / "ft"), "-q", "--no-tensorboard",
                 "--no-report", "--workers", "0", "--no-disk-cache"])
    assert code == 0, capsys.readouterr().err
    assert CANARY_MODULE not in sys.modules and not honest["canary"].exists()


def test_trusted_code_loads_but_only_a_network_class_or_factory(honest, monkeypatch):
    monkeypatch.syspath_prepend(str(honest["code"]))
    folder = craft(honest, "trusted-module", _module_source)
    with pytest.raises(UserError, match="wants to import the module"):
        dlkit.load(folder)
    assert CANARY_MODULE not in sys.modules
    predictor = dlkit.load(folder, trust_code=True)  # the user's word: the module is imported and its Net built
    assert honest["canary"].read_text() == f"{CANARY_MODULE}.py"
    assert predictor.predict(str(honest["image"]))[0][0] in ("ants", "bees")
    honest["canary"].unlink()
    system = craft(honest, "trusted-os", _os_system)
    with pytest.raises(UserError, match="names the module 'os'"):
        dlkit.load(system, trust_code=True)  # even trusted: the stdlib builds no network
    assert not honest["canary"].exists()


def test_model_code_trusts_the_network_file_but_not_models_from(honest):
    folder = craft(honest, "both", lambda m, h: (_file_source(m, h), _models_from(m, h)))
    with pytest.raises(UserError, match=r"evil.py \(models_from\)"):
        dlkit.load(folder, model_code=str(honest["code"] / "evil.py"))
    assert not honest["canary"].exists()


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) |
                           st.text(max_size=12), lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELDS = ("model", "model_args", "model_source", "spec", "modality", "task", "config", "config.models_from",
          "config.model", "model_args.in_channels", "model_args.hidden", "model_source.module", "model_source.file",
          "spec.image_size", "spec.channels", "spec.mean", "spec.std", "spec.class_names")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_json_in_any_field_gives_a_prediction_or_a_clean_error(honest, field, value):
    best = honest["run"] / "checkpoints" / "best.safetensors"
    tensors, meta = load_tensors(best)
    if field.startswith("model_source"):
        meta["model_source"] = {"module": CANARY_MODULE, "name": "Net"}
    head, _, leaf = field.partition(".")
    if leaf and isinstance(meta.get(head), dict):
        meta[head][leaf] = value
    else:
        meta[head] = value
    crafted = honest["root"] / "fuzz.safetensors"
    save_tensors(crafted, tensors, meta, durable=False)
    before = set(sys.modules)
    try:
        predictor = dlkit.load(crafted, device="cpu")
        predictor.predict(str(honest["image"]))
    except UserError as e:
        assert "\n" not in str(e)
    new = {m for m in set(sys.modules) - before if m.split(".")[0] not in sys.stdlib_module_names}
    assert not new and not honest["canary"].exists()


def test_onnx_files_with_external_data_are_refused_before_onnxruntime_opens_them(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    from dlkit.export import OnnxModel

    weight = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), name="w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"format": json.dumps("dlkit-onnx"), "format_version": "1",
                                   "modality": json.dumps("image")})
    model.graph.initializer[0].ClearField("raw_data")  # point the weight at a file on this machine instead
    model.graph.initializer[0].data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "16")):
        entry = model.graph.initializer[0].external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    import onnxruntime

    opened = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a))
    with pytest.raises(UserError, match="keeps tensor 'w' in external data files, which dlkit never writes"):
        OnnxModel(path)
    assert opened == []
    from dlkit.serve.backends import load_backend

    with pytest.raises(UserError, match="external data"):
        load_backend(path, "onnx")
    assert opened == []


def test_an_onnx_constant_whose_sparse_value_points_outside_is_refused(tmp_path, monkeypatch):
    """The same hole through a node attribute's sparse tensor (found in review: onnxruntime read a file beside the
    model into a Constant's values)."""
    pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from dlkit.export import OnnxModel

    values = numpy_helper.from_array(np.zeros(4, dtype=np.uint8), name="v")
    values.ClearField("raw_data")
    values.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "4")):
        entry = values.external_data.add()
        entry.key, entry.value = key, value
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.arange(4, dtype=np.int64), name="i"), [4])
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], sparse_value=sparse),
                               helper.make_node("Identity", ["c"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"format": json.dumps("dlkit-onnx"), "format_version": "1",
                                   "modality": json.dumps("image")})
    (tmp_path / "secret.bin").write_bytes(b"SECR")
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    monkeypatch.chdir(tmp_path)  # onnxruntime resolves the location from here when handed bytes
    with pytest.raises(UserError, match="keeps tensor 'v' in external data files"):
        OnnxModel(tmp_path / "m.onnx")


@pytest.mark.parametrize("model", ["os:system", "subprocess:getoutput", "torch.hub:load"])
def test_even_a_trusted_resume_builds_no_library_function(honest, tmp_path, model, capsys):
    """--trust-code trusts the run folder's network, not any callable it names (found in review: a config.yaml
    with model os:system and its command in model_args ran it on a trusted resume)."""
    from dlkit.cli.main import main

    folder = honest["root"] / f"resume-{model.replace(':', '-')}"
    shutil.copytree(honest["run"], folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"], config["model_args"] = model, {"command": f"touch {honest['canary']}", "cmd": "true"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--resume", str(folder), "--epochs", "2", "-q", "--trust-code"]) == 2
    err = capsys.readouterr().err
    assert "holds no network" in err or "is not an nn.Module class or a function defined there" in err
    assert "Traceback" not in err and not honest["canary"].exists()


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(model="mlp", model_args={**m["model_args"], "hidden": [60000, 60000]}),
     "its weights do not fit the mlp its arguments describe"),  # 14 GB if it were built
    (lambda m: m["model_args"].update(image_size=float("inf")), "OverflowError"),
    (lambda m: m.update(model="tv:resnet18", model_args={**m["model_args"], "groups": 2}), "bad option for model"),
    (lambda m: m["model_args"].update(image_size=2000), "differ from the spec's"),
])
def test_model_arguments_no_training_wrote_are_refused_before_anything_is_allocated(honest, change, message):
    best = honest["run"] / "checkpoints" / "best.safetensors"
    tensors, meta = load_tensors(best)
    change(meta)
    crafted = honest["root"] / "args.safetensors"
    save_tensors(crafted, tensors, meta, durable=False)
    with pytest.raises(UserError, match=message):
        dlkit.load(crafted, device="cpu")


def _resume_folder(honest, name, change):
    folder = honest["root"] / f"damaged-{name}"
    shutil.copytree(honest["run"], folder)
    change(folder)
    return folder


def _rewrite_meta(file, change):
    tensors, meta = load_tensors(file)
    change(meta)
    save_tensors(file, tensors, meta, durable=False)


@pytest.mark.parametrize("name, change, message", [
    ("yaml-list", lambda f: (f / "config.yaml").write_text("- a\n- b\n"), "holds a list, not the options of a run"),
    ("yaml-bad", lambda f: (f / "config.yaml").write_text("model: [\n"), "is not valid YAML"),
    ("no-config", lambda f: _rewrite_meta(f / "checkpoints" / "last.safetensors", lambda m: m.pop("config")),
     "KeyError: 'config'"),
    ("cv-json", lambda f: (f / "cv.json").write_text("[]"), "is not a cv.json dlkit wrote"),
    ("eval-workers", lambda f: _rewrite_meta(f / "checkpoints" / "best.safetensors",
                                             lambda m: m["config"].update(workers="x")), "ValueError"),
])
def test_damaged_run_folders_are_one_line_errors(honest, capsys, name, change, message):
    """Found in review: each of these was a traceback."""
    from dlkit.cli.main import main

    folder = _resume_folder(honest, name, change)
    argv = {"cv-json": ["predict", str(folder), str(honest["image"])],
            "eval-workers": ["eval", str(folder)]}.get(name, ["train", "--resume", str(folder), "--epochs", "2", "-q"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
