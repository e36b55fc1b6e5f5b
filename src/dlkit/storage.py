"""Self-describing checkpoints: safetensors weights + JSON metadata in one file, written atomically, loaded without pickle."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

FORMAT = "dlkit-checkpoint"
FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`: a crash leaves the old file intact.
    durable=False skips the two fsyncs (a few ms each beside a run's other writes) for files rewritten whole and often,
    whose content is also kept elsewhere: a crashed process still leaves the old file or the new one, never half."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run folder is read by others (team, browser)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        raise UserError(f"could not write {path} ({e.strerror or e}); {kept}; free disk space or fix permissions, "
                        "then --resume the run") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order: catches a flipped byte safetensors would load."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():  # the tensor's own memory: hashlib reads any buffer, so no copy of a 200 MB cache is made
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def content_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 of the weights and of the metadata beside them: a flipped byte in a class name, a mean or the model
    name would change predictions as surely as one in the weights (fuzzing found them loaded silently)."""
    body = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True)
    return hashlib.sha256(f"{tensors_digest(tensors)}|{body}".encode()).hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], durable: bool = True) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**meta, "sha256": content_digest(tensors, meta)}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    atomic_write_bytes(path, save(tensors, metadata=header), durable)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a dlkit file, verified against its digest."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a run folder or a .safetensors file from one")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        header = _read_header(raw)
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"checkpoint {path} is corrupted or truncated ({str(e).splitlines()[0][:100]}); use another checkpoint") from None
    if header.get("format") != FORMAT:
        raise UserError(f"{path} is a safetensors file but not a dlkit checkpoint; pass it to --weights instead")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError):
        raise UserError(f"checkpoint {path} has damaged metadata; use another checkpoint") from None
    # files written before the metadata was covered hold the weights' digest alone; a newer file's digest never
    # equals that, so accepting it cannot let damaged metadata of a newer file through
    if not isinstance(meta, dict) or (meta.get("sha256") != content_digest(tensors, meta)  # the older digest only
                                      and meta.get("sha256") != tensors_digest(tensors)):  # when the newer differs
        raise UserError(f"checkpoint {path} is corrupted: its weights or metadata do not match their SHA-256; "
                        "use another checkpoint")
    return tensors, meta


def _read_header(raw: bytes) -> dict[str, str]:
    if len(raw) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise ValueError("header length beyond end of file")
    return json.loads(raw[8:8 + n].decode("utf-8")).get("__metadata__", {})


def read_foreign_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a .pt/.pth file, never unpickling code (weights_only=True)."""
    if not path.is_file():
        raise UserError(f"--weights {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise UserError(f"--weights {path} is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for code, others for damage
        raise UserError(f"refusing to load {path}: not a plain weights file ({str(e).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"--weights {path} does not hold a state dict of tensors")
    return obj


# ---- training state (optimizer, scheduler, RNG) for --resume -------------------------------------------------


def flatten_state(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split nested state into (tensors by path, JSON-able skeleton with {"__tensor__": path} placeholders)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj, path):
        if torch.is_tensor(obj):
            tensors[path] = obj
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[_key(k), walk(v, f"{path}/{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(obj)]
        return obj

    return tensors, walk(state, prefix)


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {_unkey(k): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def _key(k):
    return {"int": k} if isinstance(k, int) else k


def _unkey(k):
    return k["int"] if isinstance(k, dict) else k
