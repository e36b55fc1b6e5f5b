"""Checkpoints: atomic, self-describing, verified; foreign weights loaded without running pickled code."""
import os
from pathlib import Path

import pytest
import torch

import dlkit
from dlkit.errors import UserError
from dlkit.storage import (flatten_state, load_tensors, read_foreign_weights, save_tensors,
                                    unflatten_state)


def small_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt.safetensors"
    save_tensors(path, {"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(3)}, {"model": "softmax"})
    return path


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors, meta = load_tensors(small_checkpoint(tmp_path))
    assert meta["model"] == "softmax" and len(meta["sha256"]) == 64
    torch.testing.assert_close(tensors["w"], torch.arange(64, dtype=torch.float32))
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed, not left behind


def test_a_flipped_byte_in_the_weights_is_detected(tmp_path):
    path = small_checkpoint(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # inside the tensor data: safetensors itself would load this silently
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupted: its weights or metadata do not match their SHA-256"):
        load_tensors(path)


def test_a_changed_class_name_in_the_metadata_is_detected(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_tensors(path, {"w": torch.ones(3)}, {"model": "softmax", "spec": {"class_names": ["cat", "dog"]}})
    path.write_bytes(path.read_bytes().replace(b"dog", b"dig"))  # same length: the file still parses
    with pytest.raises(UserError, match="weights or metadata do not match their SHA-256"):
        load_tensors(path)


def test_a_checkpoint_from_before_the_metadata_was_digested_still_loads(tmp_path):
    import json

    from safetensors.torch import save_file

    from dlkit.storage import tensors_digest

    tensors = {"w": torch.arange(4.0)}
    meta = {"model": "softmax", "sha256": tensors_digest(tensors)}  # the weights' digest alone, as written then
    save_file(tensors, str(tmp_path / "old.safetensors"),
              metadata={"format": "dlkit-checkpoint", "format_version": "1", "meta": json.dumps(meta)})
    loaded, loaded_meta = load_tensors(tmp_path / "old.safetensors")
    assert torch.equal(loaded["w"], tensors["w"]) and loaded_meta["model"] == "softmax"


def test_a_truncated_checkpoint_is_detected(tmp_path):
    path = small_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(UserError, match="corrupted or truncated"):
        load_tensors(path)


def test_a_plain_safetensors_file_is_not_taken_for_a_checkpoint(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="not a dlkit checkpoint"):
        load_tensors(tmp_path / "plain.safetensors")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weight": torch.zeros(1), "payload": _Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="refusing to load"):
        read_foreign_weights(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_nested_training_state_survives_flattening():
    state = {"optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"lr": 0.1, "betas": [0.9, 0.99], "params": [0]}]},
             "rng": [3, (1, 2), None]}
    tensors, skeleton = flatten_state(state)
    import json

    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["optimizer"]["state"][0]["step"] == 3.0 and back["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert back["rng"] == [3, [1, 2], None]


def test_python_api_trains_loads_and_predicts_in_memory(tmp_path):
    run = dlkit.train(data="digits", model="softmax", epochs=1, out=str(tmp_path / "run"), tensorboard=False, quiet=True)
    predictor = dlkit.load(run.dir)
    assert predictor.classes == tuple(str(i) for i in range(10))
    sample = sorted((run.dir / "samples").glob("*.png"))[0]
    from PIL import Image

    top_from_file = predictor.predict(sample, topk=3)
    top_from_pil = predictor.predict(Image.open(sample), topk=3)
    assert len(top_from_file) == 3 and top_from_file == top_from_pil
    assert run.summary["best_val_acc"] == pytest.approx(run.evaluate()["accuracy"])


def test_files_whose_digest_covers_the_weights_alone_still_load_and_a_flipped_byte_is_still_refused(tmp_path):
    """Checkpoints written before the metadata joined the digest hold the weights' digest only."""
    import json

    from safetensors.torch import save

    from dlkit.storage import FORMAT, FORMAT_VERSION, tensors_digest

    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    meta = {"model": "lenet", "sha256": tensors_digest(tensors)}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    path = tmp_path / "old.safetensors"
    path.write_bytes(save(tensors, metadata=header))
    loaded, read_meta = load_tensors(path)
    assert torch.equal(loaded["w"], tensors["w"]) and read_meta["model"] == "lenet"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # a bit of the last weight
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="SHA-256"):
        load_tensors(path)
