"""OnnxModel: a `dlkit export`ed file run by onnxruntime, its preprocessing rebuilt from the file's metadata alone.

The file carries everything (see export/onnx.py): an image model takes uint8 NxCxHxW pixels (0..255) at the
spec's size and normalises inside the graph, so a consumer only decodes and resizes; a table model takes the
float rows `TableSpec.transform` makes from a DataFrame, rebuilt here from the spec in the metadata.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError

FORMAT = "dlkit-onnx"      # metadata_props["format"]: marks a file written by `dlkit export`
FORMAT_VERSION = 1
EXTRAS_HINT = "pip install 'dlkit[export]'"
CHUNK = 64                 # batch size when running an exported graph over samples (export's checks)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"running ONNX models needs onnxruntime: {EXTRAS_HINT}") from None
    return onnxruntime


def _image_spec(d: dict[str, Any]):
    from ..data.spec import PreprocessSpec

    return PreprocessSpec.from_dict(d)


def _table_spec(d: dict[str, Any]):
    from ..data.tables import TableSpec

    return TableSpec.from_dict(d)


SPECS = {"image": _image_spec, "table": _table_spec}  # modality -> builder of its preprocessing spec


def read_metadata(props: dict[str, str], where: str) -> dict[str, Any]:
    """metadata_props (every value a JSON string) -> dict, refusing files `dlkit export` did not write."""
    try:
        meta = {key: json.loads(value) for key, value in props.items()}
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise UserError(f"{where} was not written by `dlkit export` (no dlkit metadata); export the run with "
                        "`dlkit export RUN`")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{where}: its format_version {str(version)[:20]!r} is not one dlkit writes; export it again")
    if version > FORMAT_VERSION:
        raise UserError(f"{where} was written by a newer dlkit (format {meta['format_version']}); upgrade dlkit")
    if meta.get("modality") not in SPECS:
        raise UserError(f"{where} holds a {meta.get('modality')!r} model, which this dlkit cannot run; upgrade dlkit")
    return meta


def self_contained_bytes(path: Path) -> bytes:
    """The file's bytes, refused when any tensor in it points to external data: `dlkit export` never writes such
    files, and an external-data location names a file on this machine for onnxruntime to read (any path, `..`
    included). Checked with onnx's own parser before onnxruntime opens anything."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX model
        raise UserError(f"{path} is not a readable ONNX model ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                        "export it again with `dlkit export`") from None
    external = [t.name or "(unnamed)" for t in _all_tensors(model) if uses_external_data(t) or len(t.external_data)]
    if external:
        raise UserError(f"{path} keeps tensor {external[0]!r}{f' and {len(external) - 1} more' if len(external) > 1 else ''} "
                        "in external data files, which dlkit never writes and will not read; export the run again "
                        "with `dlkit export` (one self-contained file)")
    return data


def _all_tensors(message):
    """Every TensorProto anywhere in a protobuf message: initializers, sparse values and indices, node attributes
    (dense and sparse), nested graphs, functions, training info. Walked generically, so no field is missed."""
    import onnx

    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        for item in (value if field.is_repeated else [value]):
            if isinstance(item, onnx.TensorProto):
                yield item
            yield from _all_tensors(item)


def session_options(threads: int | None):
    """One inference at a time on a fixed number of intra-op threads: callers (a server's worker) own the
    parallelism, and a thread pool per call would oversubscribe the cores."""
    from ..device import usable_cpus

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads or usable_cpus()))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    return options


class OnnxModel:
    """An exported dlkit model on onnxruntime (CPU).

    Attributes: `modality` ("image" | "table"), `classes` (tuple of str; empty for regression), `spec`
    (PreprocessSpec or TableSpec), `meta` (the file's metadata as a dict), `path`, `threads`.

    Example::

        model = OnnxModel("runs/x/export/model.onnx", threads=2)
        model.probabilities(images_uint8)          # NxK softmax, images at model.spec.image_size
        model.predict_frame(pandas_frame)          # tables: (predictions DataFrame, notes)
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist; pass a .onnx file written by `dlkit export`")
        model_bytes = self_contained_bytes(self.path)
        options = session_options(threads)
        self.threads: int = options.intra_op_num_threads
        try:  # the bytes just checked, not the path again: what runs is what was read
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own pybind exception types for damaged files
            raise UserError(f"{self.path} is not a readable ONNX model ({str(e).splitlines()[0][:120]}); "
                            "export it again with `dlkit export`") from None
        self.meta = read_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        self.modality: str = self.meta["modality"]
        try:  # the metadata is data: a missing or mistyped spec is the file's fault, in one line
            self.spec = SPECS[self.modality](self.meta["spec"])
            self.classes: tuple[str, ...] = tuple(str(c) for c in self.meta.get("classes", ()))
            self.input_name = self.session.get_inputs()[0].name
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as e:
            raise UserError(f"{self.path} has no model input or preprocessing spec dlkit can use ({type(e).__name__}: "
                            f"{str(e)[:100]}); export it again with `dlkit export`") from None
        self._table = None

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, {self.modality}, {len(self.classes)} classes, threads={self.threads})"

    def outputs(self, inputs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The graph's raw output as a float32 tensor: logits, or the scaled regression value (see meta["output"])."""
        x = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        return torch.from_numpy(self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]).float()

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NxCxHxW at the spec's size and channels -> NxK class probabilities (softmax)."""
        self._require("image", "probabilities")
        spec = self.spec
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
                or tuple(images.shape[1:]) != (spec.channels, spec.image_size, spec.image_size):
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise UserError(f"{self.path.name} takes uint8 images Nx{spec.channels}x{spec.image_size}x"
                            f"{spec.image_size} (got {got}); resize them to the spec first")
        return self.outputs(images).softmax(1)

    def predict_frame(self, frame, id_column: str | None = None, where: str | None = None):
        """(DataFrame of predictions, notes) for a table, exactly as TablePredictor.predict_frame gives them."""
        self._require("table", "predict_frame")
        return self.table_predictor().predict_frame(frame, id_column, where)

    def table_predictor(self):
        """dlkit's TablePredictor with this file's graph in place of the PyTorch model: reading, unseen-category
        notes, id columns and the task's decoding are shared, so ONNX and eager predictions cannot drift apart."""
        if self._table is None:
            from ..infer.tabular import TablePredictor

            self._table = TablePredictor([_GraphModule(self)], [self.spec], self.meta, torch.device("cpu"), self.path)
        return self._table

    def _require(self, modality: str, method: str) -> None:
        if self.modality != modality:
            raise UserError(f"{self.path.name} holds a model for {self.modality}s; {method}() is for {modality} models")


class _GraphModule:
    """Stands in for an nn.Module inside TablePredictor: eval() and a call mapping input rows to outputs."""

    def __init__(self, model: OnnxModel):
        self.model = model

    def eval(self) -> "_GraphModule":
        return self

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model.outputs(rows.float())


# ---- an exported graph's bytes, checked and run: what export and quantization compare with PyTorch ----------

def checked_bytes(onnx, proto) -> bytes:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise UserError(f"the exported graph fails onnx.checker ({str(e).splitlines()[0][:150]}); nothing was "
                        "written; try another --opset") from None
    return proto.SerializeToString()


def run_bytes(data: bytes, inputs: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """An ONNX model (bytes) on onnxruntime over `inputs` in chunks, plus one call at batch 1 (the dynamic batch
    must hold there too): float32 outputs."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(data, session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"onnxruntime {ort.__version__} cannot load the exported graph "
                        f"({str(e).splitlines()[0][:150]}); nothing was written; try a lower --opset") from None
    name = session.get_inputs()[0].name
    run = lambda x: torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.numpy())})[0]).float()  # noqa
    if len(inputs):
        run(inputs[:1])
    parts = [run(inputs[s:s + CHUNK]) for s in range(0, len(inputs), CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0)
