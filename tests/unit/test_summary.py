"""Model summaries: compute checked against torch's FlopCounterMode (exact), memory against a measured peak."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dlkit
from dlkit.cli.main import main
from dlkit.evaluation.summary import format_summary, summarize
from dlkit.models import default_size, list_models


def small(name: str) -> int:
    return min(32, default_size(name))


@pytest.mark.parametrize("name", list_models())
def test_flops_equal_flop_counter_mode_forward_and_training_step(name):
    size = small(name)
    model = dlkit.create_model(name, in_channels=3, num_classes=10, image_size=size)
    s = summarize(model, (3, size, size), batch_size=4)
    model.eval()
    with FlopCounterMode(display=False) as forward:
        model(torch.zeros(1, 3, size, size))
    model.train()
    with FlopCounterMode(display=False) as step:
        model(torch.rand(4, 3, size, size)).sum().backward()
    assert s["flops_forward_per_image"] == forward.get_total_flops() > 0
    assert s["flops_train_step"] == step.get_total_flops()
    assert s["params"] == sum(p.numel() for p in model.parameters()) == sum(row["params"] for row in s["layers"])


def test_layer_table_has_shapes_params_and_macs_of_the_classic_lenet():
    s = summarize(dlkit.create_model("lenet", in_channels=1, num_classes=10, image_size=28), (1, 28, 28), 256, "sgd")
    convs = [row for row in s["layers"] if row["type"] == "Conv2d"]
    assert [c["output"] for c in convs] == [[6, 28, 28], [16, 10, 10]]
    assert [c["params"] for c in convs] == [6 * 25 + 6, 16 * 6 * 25 + 16]
    assert convs[0]["macs"] == 6 * 28 * 28 * 25  # one 5x5 kernel per output pixel
    assert s["params"] == 61_706 and s["params_frozen"] == 0
    assert s["memory_train_bytes"]["optimizer_state"] == 0  # plain SGD keeps no state
    text = format_summary(s)
    assert "61,706 (61,706 trainable, 0 frozen)" in text and "AvgPool2d" in text and "16x5x5" in text


def test_frozen_backbone_trains_fewer_flops_and_keeps_no_gradients_for_it():
    model = dlkit.create_model("quick", in_channels=3, num_classes=10, image_size=32)
    full = summarize(model, (3, 32, 32), 16, "adam")
    model.freeze_backbone()
    frozen = summarize(model, (3, 32, 32), 16, "adam")
    head = sum(p.numel() for p in model.head.parameters())
    assert frozen["params_trainable"] == head and frozen["params_frozen"] == full["params"] - head
    assert frozen["flops_forward_per_image"] == full["flops_forward_per_image"]
    assert frozen["flops_train_step"] < full["flops_train_step"] / 2.5  # only the head's weight gradient is left
    assert frozen["memory_train_bytes"]["optimizer_state"] == 2 * 4 * head


@pytest.mark.parametrize("name", ["mlp", "lenet-modern", "quick", "nin", "resnet18"])
@pytest.mark.parametrize("batch_size", [8, 64])
def test_memory_estimates_are_close_to_the_measured_peak(name, batch_size):
    """Tolerance: training within 35% of the peak torch's MemTracker measures on the CPU (AdamW, second step, so the
    optimizer state exists); prediction within a factor of 2 (skip connections keep more alive than one layer)."""
    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker", reason="torch without MemTracker")
    size = small(name)
    model = dlkit.create_model(name, in_channels=3, num_classes=10, image_size=size)
    s = summarize(model, (3, size, size), batch_size, "adamw")
    x, y = torch.rand(batch_size, 3, size, size), torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.AdamW(model.parameters())

    def step():
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    train = mem_tracker.MemTracker()
    train.track_external(model, optimizer)
    with train:
        step()
    model.eval()
    predict = mem_tracker.MemTracker()
    predict.track_external(model)
    with predict, torch.no_grad():
        model(x)
    peak_train = train.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    peak_predict = predict.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    assert 0.65 < s["memory_train_bytes"]["total"] / peak_train < 1.35
    assert 0.5 < s["memory_predict_bytes"]["total"] / peak_predict < 2.0


def test_activation_memory_grows_linearly_with_the_batch():
    model = dlkit.create_model("lenet-modern", in_channels=1, num_classes=10, image_size=28)
    a, b = summarize(model, (1, 28, 28), 10), summarize(model, (1, 28, 28), 110)
    per_image = a["activation_bytes_per_image"]
    assert per_image > 28 * 28 * 4  # at least the first conv's input is kept for backward
    grown = b["memory_train_bytes"]["activations"] - a["memory_train_bytes"]["activations"]
    assert grown == pytest.approx(100 * per_image, rel=0.01)


def test_summary_command_for_a_model_and_for_a_checkpoint(tmp_path, capsys):
    assert main(["summary", "lenet", "--input", "1x28x28", "--classes", "10", "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lenet on 1x28x28 inputs") and "Conv2d" in out and "61,706" in out
    assert "per training step at batch 64" in out and "predict:" in out
    run = dlkit.train(data="digits", model="lenet-modern", epochs=1, out=str(tmp_path / "run"), quiet=True,
                      tensorboard=False, report=False)
    assert main(["summary", str(run.dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input"] == [1, 8, 8] and result["optimizer"] == "adamw"
    assert result["params"] == sum(p.numel() for p in dlkit.load(run.dir).model.parameters())


@pytest.mark.parametrize("argv,message", [
    (["summary", "resnet-18"], "did you mean resnet18"),
    (["summary", "lenet", "--input", "1x28"], "--input must be CxHxW"),
    (["summary", "lenet", "--input", "1x28x28", "--optimizer", "lion"], "--optimizer must be one of"),
    (["summary", "lenet", "--input", "1x28x28", "--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_summary_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
