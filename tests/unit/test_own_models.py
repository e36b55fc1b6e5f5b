"""The learner's own networks, written as the course writes them, trained from the CLI (file.py:Class) and from
Python (an instance), then resumed, summarised and used to predict in a fresh process; and each bad case."""
import json
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from fakedata import make_class_folders
from torch import nn

import dlkit
from dlkit.cli.main import main
from dlkit.storage import load_tensors

NETS = textwrap.dedent('''
    import torch
    from torch import nn
    import dlkit


    class Tudui(nn.Module):
        """The beginner course's CIFAR-10 net: an nn.Sequential inside a class."""

        def __init__(self, num_classes=10):
            super().__init__()
            self.model1 = nn.Sequential(
                nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(2), nn.Conv2d(32, 32, 5, padding=2), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 5, padding=2), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 64),
                nn.Linear(64, num_classes))

        def forward(self, x):
            return self.model1(x)


    def lenet(num_classes=10, in_channels=3):
        """d2l's LeNet as a plain nn.Sequential built in a function."""
        return nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
                             nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
                             nn.LazyLinear(120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
                             nn.Linear(84, num_classes))


    class CenteredLayer(nn.Module):
        def forward(self, x):
            return x - x.mean()


    class MyLinear(nn.Module):
        def __init__(self, in_units, units):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(in_units, units) * 0.1)
            self.bias = nn.Parameter(torch.zeros(units))

        def forward(self, x):
            return torch.matmul(x, self.weight) + self.bias


    class MySequential(nn.Module):
        """d2l's custom block holding a custom layer."""

        def __init__(self, *args):
            super().__init__()
            for idx, module in enumerate(args):
                self._modules[str(idx)] = module

        def forward(self, x):
            for block in self._modules.values():
                x = block(x)
            return x


    def custom(num_classes=2, image_size=32):
        return MySequential(nn.Flatten(), MyLinear(3 * image_size * image_size, 32), CenteredLayer(), nn.ReLU(),
                            nn.Linear(32, num_classes))


    @dlkit.register_model("tudui-registered")
    def registered(num_classes=10):
        return Tudui(num_classes)


    class Aux(nn.Module):
        def __init__(self, num_classes=2):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

        def forward(self, x):
            out = self.body(x)
            return out, out * 0.5  # like GoogLeNet's auxiliary outputs


    class WrongCount(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class Frozen(nn.Module):
        def __init__(self, num_classes=2):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, num_classes).requires_grad_(False)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class Buggy(nn.Module):
        def __init__(self, num_classes=2):
            super().__init__()
            self.fc = nn.Linear(100, num_classes)

        def forward(self, x):
            flat = x.flatten(1)
            return self.fc(flat)  # the learner's bug: 3072 features, not 100
''')


@pytest.fixture
def setup(tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NETS)
    data = make_class_folders(tmp_path / "imgs", ("蚂蚁", "bees"), per_class=6, size=32)
    return net, data, tmp_path


def run(*argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


FAST = ["--epochs", 1, "--no-tensorboard", "--no-report", "--workers", 0, "--no-disk-cache"]


@pytest.mark.parametrize("name", ["Tudui", "lenet", "custom"])
def test_own_network_trains_resumes_summarises_and_predicts_in_a_fresh_process(setup, name, capsys):
    net, data, tmp = setup
    out_dir = tmp / f"run-{name}"
    code, out, err = run("train", "--data", data, "--model", f"{net}:{name}", "--out", out_dir, *FAST, capsys=capsys)
    assert code == 0, err
    assert dlkit.load(out_dir, trust_code=True).meta["model_source"]["sha256"]
    code, out, err = run("train", "--resume", out_dir, "--epochs", 2, "--no-report", capsys=capsys)
    assert code == 2 and f"wants to run the file {net}" in err and "--trust-code" in err  # a run folder is data
    code, out, err = run("train", "--resume", out_dir, "--epochs", 2, "--no-report", "--trust-code", capsys=capsys)
    assert code == 0 and "resuming" in out and "epoch 2/2" in out and "epoch 1/2" not in out
    code, out, err = run("summary", out_dir, "--trust-code", capsys=capsys)
    assert code == 0 and "parameters" in out
    fresh = subprocess.run([sys.executable, "-m", "dlkit.cli.main", "predict", str(out_dir), str(data / "bees"),
                            "--trust-code", "--json", "--topk", "2"],
                           capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    answers = {row["file"]: {p["class"]: p["probability"] for p in row["predictions"]}
               for row in map(json.loads, fresh.stdout.splitlines())}
    assert len(answers) == 6
    # the same probabilities as here, from the trained weights (not a network rebuilt with fresh ones)
    predictor = dlkit.load(out_dir, trust_code=True)
    saved = load_tensors(out_dir / "checkpoints" / "best.safetensors")[0]
    assert all(torch.equal(value, saved[key]) for key, value in predictor.model.state_dict().items())
    here = predictor.predict_proba(list(answers))
    for probabilities, got in zip(here, answers.values()):
        assert [got[c] for c in predictor.classes] == pytest.approx(probabilities.tolist(), abs=1e-5)


def test_an_instance_from_python_and_a_registered_name(setup, tmp_path, capsys):
    net, data, tmp = setup
    sys.path.insert(0, str(tmp))
    try:
        import net as nets  # noqa: F401  (the learner's module, imported as they would)
    finally:
        sys.path.remove(str(tmp))
    run_ = dlkit.train(model=nets.Tudui(num_classes=2), data=str(data), epochs=1, out=str(tmp / "py"),
                       tensorboard=False, report=False, workers=0, disk_cache=False, quiet=True)
    assert run_.summary["model"].endswith("net.py:Tudui")
    assert run_.load().predict(str(next((data / "bees").iterdir())))[0][0] in ("蚂蚁", "bees")
    code, out, err = run("models", "--models-from", net, capsys=capsys)
    assert "tudui-registered" in out
    code, out, err = run("train", "--data", data, "--models-from", net, "--model", "tudui-registered",
                         "--out", tmp / "reg", *FAST, capsys=capsys)
    assert code == 0, err
    code, out, err = run("predict", tmp / "reg", data / "bees", capsys=capsys)
    assert code == 2 and "(models_from)" in err and "--model-code" not in err  # only --trust-code runs that file
    fresh = subprocess.run([sys.executable, "-m", "dlkit.cli.main", "predict", str(tmp / "reg"), str(data / "bees"),
                            "--trust-code"], capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr


def test_a_tuple_output_uses_its_first_with_a_note(setup, capsys):
    net, data, tmp = setup
    code, out, err = run("train", "--data", data, "--model", f"{net}:Aux", "--out", tmp / "aux", *FAST, capsys=capsys)
    assert code == 0 and "returns a tuple" in out


@pytest.mark.parametrize("name, message", [
    ("WrongCount", "WrongCount outputs 10 values per image, the data has 2 classes: pass num_classes or change the last layer"),
    ("Frozen", "Frozen has no trainable parameters"),
    ("Missing", "has no 'Missing'; it defines"),
])
def test_bad_networks_are_one_line_errors_before_training(setup, name, message, capsys):
    net, data, tmp = setup
    code, out, err = run("train", "--data", data, "--model", f"{net}:{name}", "--out", tmp / name, *FAST,
                         capsys=capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp / name).exists()  # nothing half-made


def test_a_bug_in_the_learners_forward_keeps_their_traceback_trimmed_to_their_file(setup, capsys):
    net, data, tmp = setup
    code, out, err = run("train", "--data", data, "--model", f"{net}:Buggy", "--out", tmp / "bug", *FAST,
                         capsys=capsys)
    assert code == 2 and "Buggy failed on a batch of 2 inputs of 3x32x32" in err
    assert f'File "{net}"' in err and "return self.fc(flat)" in err  # their frame and line
    assert "dlkit/" not in err.split("error:")[0]  # none of dlkit's frames


def test_predict_says_which_when_the_code_is_gone_or_changed(setup, capsys):
    net, data, tmp = setup
    out_dir = tmp / "run"
    assert run("train", "--data", data, "--model", f"{net}:Tudui", "--out", out_dir, *FAST, capsys=capsys)[0] == 0
    moved = tmp / "moved.py"
    net.rename(moved)
    code, out, err = run("predict", out_dir, data / "bees", "--trust-code", capsys=capsys)
    assert code == 2 and "is gone; pass where it is now with --model-code FILE" in err
    code, out, err = run("predict", out_dir, data / "bees", "--model-code", moved, capsys=capsys)
    assert code == 0 and len(out.splitlines()) == 6
    moved.write_text(NETS.replace("nn.Linear(64, num_classes)", "nn.Linear(64, num_classes), nn.ReLU()"))
    code, out, err = run("predict", out_dir, data / "bees", "--model-code", moved, capsys=capsys)
    assert code == 0 and "changed since training" in err  # still loads strictly: allowed, with a warning
    moved.write_text(NETS.replace("nn.Linear(1024, 64)", "nn.Linear(1024, 48)").replace("Linear(64, num", "Linear(48, num"))
    code, out, err = run("predict", out_dir, data / "bees", "--model-code", moved, capsys=capsys)
    assert code == 2 and "do not fit Tudui (its code changed since training)" in err


def test_nn_lazylinear_is_materialised_before_the_optimizer_sees_it(setup):
    net, data, tmp = setup
    sys.path.insert(0, str(tmp))
    try:
        import net as nets
    finally:
        sys.path.remove(str(tmp))
    from dlkit.models.user import create_user_model

    model, _, _ = create_user_model(nets.lenet, 3, 2, 32)
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


FACTORY = textwrap.dedent('''
    from torch import nn


    def make_net(num_classes=10, in_channels=3, image_size=32, width=4):
        """An importable factory, as a package ships it."""
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(width * image_size * image_size, num_classes))
''')


def parameters_printed(out: str) -> int:
    return int(re.search(r"parameters:\s+([\d,]+)", out).group(1).replace(",", ""))


def test_a_factory_of_an_importable_module_trains_with_tensorboard_and_the_report_on(setup, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    net, data, tmp = setup
    (tmp / "site" / "mypkg").mkdir(parents=True)
    (tmp / "site" / "mypkg" / "__init__.py").write_text("")
    (tmp / "site" / "mypkg" / "nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp / "site"))
    out_dir = tmp / "run"
    code, out, err = run("train", "--data", data, "--model", "mypkg.nets:make_net", "--model-arg", "width=6",
                         "--epochs", 2, "--workers", 0, "--no-disk-cache", "--out", out_dir, capsys=capsys)
    assert code == 0, err
    import mypkg.nets

    want = sum(p.numel() for p in mypkg.nets.make_net(num_classes=2, in_channels=3, image_size=32, width=6)
               .parameters())  # the --model-arg and the data's classes, channels and size reached the factory
    model = dlkit.load(out_dir, trust_code=True).model
    assert sum(p.numel() for p in model.parameters()) == want
    events = EventAccumulator(str(out_dir / "tb"), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/val")] == [1, 2] and events.Tags()["graph"] is True
    assert any(t.startswith("weights/") for t in events.Tags()["histograms"])
    report = (out_dir / "report.html").read_text()
    assert "mypkg.nets:make_net" in report and (out_dir / "plots").is_dir()
    code, out, err = run("summary", out_dir, "--trust-code", capsys=capsys)
    assert code == 0 and parameters_printed(out) == want, err


def test_summary_of_a_class_in_a_file_counts_its_parameters(setup, capsys):
    net, _, tmp = setup
    code, out, err = run("summary", f"{net}:Tudui", "--input", "3x32x32", capsys=capsys)
    assert code == 0, err
    sys.path.insert(0, str(tmp))
    try:
        import net as nets
    finally:
        sys.path.remove(str(tmp))
    assert parameters_printed(out) == sum(p.numel() for p in nets.Tudui().parameters())  # 10 classes by default
