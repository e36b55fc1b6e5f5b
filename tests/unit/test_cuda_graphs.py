"""CUDA graphs (issue 22): when a run's steps are graphed, decided from its settings; the graphed step's bookkeeping
(warm-up, capture, replay into the same buffers, the short batch eager) against the plain loop on the CPU through a
stand-in graph that re-runs what was recorded; and, where a GPU is, real graphs against eager steps, the fallback of
a model that syncs with the host, and a graphed run killed and resumed."""
import contextlib
import os
import signal

import pytest
import torch

from dlkit.data.spec import PreprocessSpec
from dlkit.data.transforms import Inputs
from dlkit.models import create_model
from dlkit.training import graphed
from dlkit.training.graphed import GraphedSteps, choose
from dlkit.training.loop import StepParts, new_totals, train_one_epoch

from test_faults import final_weights, metrics, step_logging_train, steps_run, wait_for

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


# ---- the decision ------------------------------------------------------------------------------------------------

def test_graphs_are_used_on_cuda_unless_something_in_the_run_cannot_be_captured():
    assert choose("auto", CUDA) == graphed.GraphChoice(True)
    assert choose("off", CUDA) == graphed.GraphChoice(False)  # asked for: nothing to say
    assert choose("auto", CPU) == graphed.GraphChoice(False)  # the CPU runs as it always did, silently
    for kwargs, word in [({"world_size": 2}, "DDP"), ({"compiled": True}, "--compile"),
                         ({"skip_nonfinite": True}, "--nan-policy skip-batch"), ({"freeze_epochs": 1}, "--freeze-epochs")]:
        choice = choose("auto", CUDA, **kwargs)
        assert not choice.use and word in choice.note and choice.note.startswith("cuda graphs: off")


def test_the_flag_reaches_the_trainer_and_the_summary_says_off_on_the_cpu(tmp_path):
    import dlkit

    run = dlkit.train(data="digits", model="softmax", epochs=1, device="cpu", cuda_graphs="auto", quiet=True,
                      out=str(tmp_path / "r"), tensorboard=False, report=False)
    assert run.summary["cuda_graphs"] == "off"
    with pytest.raises(Exception, match="cuda.graphs|choices|auto"):
        dlkit.train(data="digits", model="softmax", epochs=1, device="cpu", cuda_graphs="sometimes", quiet=True,
                    out=str(tmp_path / "bad"))


# ---- the bookkeeping, on the CPU ------------------------------------------------------------------------------------

class Rerun:
    """A stand-in for torch.cuda.CUDAGraph on the CPU: recording keeps the step and computes nothing, as capture
    does; each replay re-runs it, writing fresh gradients (a graph never adds to its buffers) and its outputs into
    the buffers the recording handed out."""

    recorded = 0

    def __init__(self, model):
        self.model = model

    @classmethod
    def record(cls, graph, step):
        cls.recorded += 1
        graph.step, graph.outputs = step, (torch.zeros(()), torch.zeros(3))
        return graph.outputs

    def replay(self):
        for p in self.model.parameters():
            p.grad = None
        for static, fresh in zip(self.outputs, self.step()):
            static.copy_(fresh)


def make_parts(name: str, seed: int = 0, device=CPU, clip=1.0):
    torch.manual_seed(seed)
    model = create_model(name, in_channels=1, num_classes=10, image_size=28).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 100)
    inputs = Inputs(PreprocessSpec(28, 1, (0.5,), (0.25,), tuple(str(i) for i in range(10))))
    return StepParts(model, optimizer, scheduler, torch.nn.functional.cross_entropy, inputs, contextlib.nullcontext,
                     clip_grad=clip)


def batches(n_batches: int, batch: int, short: int, device=CPU, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        size = short if i == n_batches - 1 else batch
        out.append((torch.randint(0, 256, (size, 1, 28, 28), generator=g, dtype=torch.uint8).to(device),
                    torch.randint(0, 10, (size,), generator=g).to(device)))
    return out


def train(parts, data, epochs: int):
    totals, losses = [], []
    for _ in range(epochs):
        t = new_totals(data[0][0].device)
        train_one_epoch(parts, data, t, lambda n, loss: losses.append(float(loss)))
        totals.append(t.tolist())
    return parts.model.state_dict(), totals, losses


def with_stand_in_graphs(parts, batch):
    parts.graphed = GraphedSteps(parts, batch, None, say=lambda text: None, graph_factory=lambda: Rerun(parts.model),
                                 record=Rerun.record)
    return parts.graphed


@pytest.mark.parametrize("name", ["lenet", "lenet-modern"])  # lenet-modern: BatchNorm, whose statistics a double
def test_graphed_steps_train_every_batch_once_as_the_plain_loop_does(name):  # step or a skipped one would change
    data = batches(6, 16, 5)  # 5 full batches and a short one, two epochs: warm-up, capture, replays, short eager
    expected = train(make_parts(name), data, 2)
    parts = make_parts(name)
    Rerun.recorded = 0
    steps = with_stand_in_graphs(parts, 16)
    got = train(parts, data, 2)
    assert steps.captured and Rerun.recorded == 1 and steps.status.startswith("captured")
    for key, value in expected[0].items():
        assert torch.allclose(got[0][key].float(), value.float(), atol=1e-6), key
    assert sum(got[1], []) == pytest.approx(sum(expected[1], []), rel=1e-6)  # loss sums, correct, seen, skipped
    assert got[2] == pytest.approx(expected[2], rel=1e-6)


def test_a_capture_that_fails_goes_on_eagerly_with_one_note_and_trains_the_batch():
    data = batches(6, 16, 5)
    expected = train(make_parts("lenet"), data, 1)
    parts, said = make_parts("lenet"), []

    def refusing(graph, step):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    parts.graphed = GraphedSteps(parts, 16, None, say=said.append, graph_factory=object, record=refusing)
    got = train(parts, data, 1)
    assert len(said) == 1 and "capture failed: RuntimeError: operation not permitted" in said[0]
    assert "more" not in said[0] and parts.graphed.status.startswith("eager")
    assert all(torch.allclose(got[0][k].float(), v.float(), atol=1e-6) for k, v in expected[0].items())


# ---- real graphs, where a GPU is -----------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("name", ["lenet", "quick", "resnet18"])
def test_graph_replay_equals_eager_steps_after_50_steps_short_batches_included(name, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    size = 32 if name == "quick" else 28

    def parts_for():
        p = make_parts("lenet", device=CUDA)
        torch.manual_seed(0)
        p.model = create_model(name, in_channels=1, num_classes=10, image_size=size).to(CUDA)
        p.optimizer = torch.optim.SGD(p.model.parameters(), lr=0.02, momentum=0.9, foreach=True)
        p.scheduler = torch.optim.lr_scheduler.LambdaLR(p.optimizer, lambda step: 1 - step / 200)
        return p

    g = torch.Generator().manual_seed(3)
    data = [(torch.randint(0, 256, (32 if i < 9 else 7, 1, size, size), generator=g, dtype=torch.uint8).cuda(),
             torch.randint(0, 10, (32 if i < 9 else 7,), generator=g).cuda()) for i in range(10)]
    eager = train(parts_for(), data, 5)  # 50 steps, 5 of them short
    parts, said = parts_for(), []
    parts.graphed = GraphedSteps(parts, 32, None, say=said.append)
    graphs = train(parts, data, 5)
    assert parts.graphed.captured, said
    for key, value in eager[0].items():
        assert torch.allclose(graphs[0][key].float(), value.float(), atol=1e-5, rtol=1e-5), key


class SyncsInForward(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))

    def forward(self, x):
        if x.abs().max().item() > 1e6:  # a host sync: a graph cannot hold it
            x = x / 1e6
        return self.net(x)


@needs_cuda
def test_a_model_that_calls_item_in_forward_falls_back_to_eager_with_the_note_and_trains():
    parts, said = make_parts("lenet", device=CUDA), []
    parts.model = SyncsInForward().cuda()
    parts.optimizer = torch.optim.SGD(parts.model.parameters(), lr=0.1)
    parts.scheduler = torch.optim.lr_scheduler.LambdaLR(parts.optimizer, lambda step: 1.0)
    parts.graphed = GraphedSteps(parts, 16, None, say=said.append)
    data = batches(6, 16, 5, device=CUDA)
    before = parts.model.net[1].weight.detach().clone()
    _, _, losses = train(parts, data, 3)
    assert not parts.graphed.captured and len(said) == 1 and "synchronises with the host" in said[0]
    assert not torch.equal(before, parts.model.net[1].weight) and losses[-1] < losses[0]


@needs_cuda
def test_a_killed_graphed_run_resumes_to_the_uninterrupted_runs_weights(tmp_path):
    args = ["train", "--data", "digits", "--model", "lenet", "--device", "cuda", "--epochs", "2", "--batch-size",
            "64", "--save-every-steps", "5", "--seed", "7", "--no-tensorboard", "--no-report", "-q"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    uninterrupted = step_logging_train(tmp_path / "reference.log", 0, *args, "--out", reference)
    child = step_logging_train(tmp_path / "killed.log", 37, *args, "--out", killed)
    wait_for(tmp_path / "killed.log.hung", child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert uninterrupted.wait(300) == 0, uninterrupted.communicate()[1][-2000:]
    resumed = step_logging_train(tmp_path / "resumed.log", 0, "train", "--resume", killed)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert steps_run(tmp_path / "resumed.log")[0] == 36
    ref, got = final_weights(reference), final_weights(killed)
    assert all(torch.allclose(ref[k].float(), got[k].float(), atol=1e-5) for k in ref)
    assert [r["epoch"] for r in metrics(killed)] == [r["epoch"] for r in metrics(reference)]
