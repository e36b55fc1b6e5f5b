"""Every registered model: forward shape, backward, head reset, freezing, and a checkpoint save/load round trip."""
import pytest
import torch

from dlkit.errors import UserError
from dlkit.models import MODELS, create_model, list_models
from dlkit.storage import load_tensors, save_tensors

# Small but legal inputs per model, to keep the suite fast (big stems are tested at 64 px).
SIZES = {"alexnet": 16, "vgg11": 16, "nin": 16, "googlenet": 16, "resnet18": 16, "quick": 16, "lenet": 28}


@pytest.fixture(params=list_models())
def name(request):
    return request.param


def build(name, channels=1, classes=3):
    return create_model(name, in_channels=channels, num_classes=classes, image_size=SIZES.get(name, 12))


def test_forward_gives_one_logit_per_class(name):
    model = build(name, channels=3, classes=5).eval()
    size = SIZES.get(name, 12)
    assert model(torch.rand(2, 3, size, size)).shape == (2, 5)


def test_backward_reaches_every_parameter(name):
    model = build(name)
    size = SIZES.get(name, 12)
    model(torch.rand(3, 1, size, size)).logsumexp(1).sum().backward()
    # a frozen parameter (the fast net's whitening filters, its BatchNorm scales) is meant to get none
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_reset_classifier_changes_the_output_width(name):
    model = build(name, classes=3)
    model.reset_classifier(7)
    size = SIZES.get(name, 12)
    assert model.eval()(torch.rand(2, 1, size, size)).shape == (2, 7)


def test_freeze_backbone_leaves_only_the_head_trainable(name):
    model = build(name)
    model.freeze_backbone()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.head.parameters()}


def test_checkpoint_round_trip_gives_identical_outputs(name, tmp_path):
    model = build(name).eval()
    size = SIZES.get(name, 12)
    x = torch.rand(2, 1, size, size)
    save_tensors(tmp_path / "m.safetensors", model.state_dict(), {"model": name})
    tensors, meta = load_tensors(tmp_path / "m.safetensors")
    fresh = build(name).eval()
    fresh.load_state_dict(tensors)
    assert meta["model"] == name
    torch.testing.assert_close(fresh(x), model(x))


@pytest.mark.parametrize("name,size", [("alexnet", 128), ("nin", 128), ("googlenet", 64), ("resnet18", 64)])
def test_large_inputs_use_the_imagenet_stem(name, size):
    model = create_model(name, in_channels=3, num_classes=4, image_size=size).eval()
    assert model(torch.rand(1, 3, size, size)).shape == (1, 4)
    assert model.net[0][0].stride != (1, 1)


def test_lenet_refuses_an_input_too_small_with_a_hint():
    with pytest.raises(UserError, match="cannot take 1x8x8.*--image-size"):
        create_model("lenet", in_channels=1, num_classes=10, image_size=8)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UserError, match="did you mean lenet"):
        create_model("lenett")


def test_unknown_model_option_is_a_user_error():
    with pytest.raises(UserError, match="bad option for model mlp"):
        create_model("mlp", num_classes=2, image_size=8, depth=3)


def test_mlp_options_shape_the_network():
    model = create_model("mlp", in_channels=1, num_classes=2, image_size=4, hidden=[8, 6], dropout=0.5)
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [8, 6, 2]


def test_torchvision_model_gets_a_new_head_and_input_channels():
    model = create_model("tv:resnet18", in_channels=1, num_classes=3, image_size=32).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    assert model.head_name == "fc"


def test_unknown_torchvision_model_suggests_names():
    with pytest.raises(UserError, match="tv:resnet18"):
        create_model("tv:resnet181")


def test_local_weights_load_into_a_torchvision_backbone(tmp_path):
    from dlkit.models import load_backbone_weights

    source = create_model("tv:resnet18", in_channels=3, num_classes=1000, image_size=32)
    torch.save(source.net.state_dict(), tmp_path / "resnet18.pth")
    target = create_model("tv:resnet18", in_channels=3, num_classes=2, image_size=32)
    missing = load_backbone_weights(target, tmp_path / "resnet18.pth")
    assert missing == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(target.net.conv1.weight, source.net.conv1.weight)


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        MODELS.register("lenet")(lambda *a: None)


def test_flatten_hands_the_gradient_back_channels_last_with_the_same_values():
    from dlkit.models.curriculum import Flatten

    x = torch.randn(4, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    grads = {}
    for name, flatten in (("ours", Flatten()), ("torch", torch.nn.Flatten())):
        inp = x.clone().requires_grad_()
        pooled = torch.nn.functional.avg_pool2d(inp, 1)  # a non-leaf, like the pooling before LeNet's head
        flat = flatten(pooled)
        pooled.register_hook(lambda g, name=name: grads.setdefault(name + "_layout", g))  # runs after Flatten's
        (flat * torch.arange(150.0)).sum().backward()
        grads[name] = inp.grad
    assert grads["ours_layout"].is_contiguous(memory_format=torch.channels_last)
    assert not grads["torch_layout"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(grads["ours"], grads["torch"])
