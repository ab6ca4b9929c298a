"""The whole detector as an ONNX file: base and head in one graph (preprocessed NCHW float32 in, logit out), the
model card in its metadata, scored by ONNX Runtime; loading and scoring one never imports PyTorch.

Preprocessing (`backbones.Preprocess`) and calibration (`Calibration.apply`) stay in Python and are the PyTorch
path's own code, so the graph is only what differs between the runtimes. The graph is exported at fp32 whatever
precision the card's base computed in. The metadata carries a format marker and a digest of the graph and the
card together: loading refuses a file fakefinder did not write, or one edited since (an integrity check against
mistakes and damage, not a signature: anyone can recompute it).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from .. import _files, options
from .._packages import require
from ..errors import DeadlineError, UsageError, one_line
from ..metrics import finite_scores
from .backbones import NORMALIZATIONS, Preprocess
from .modelcard import ModelCard
from .modelfile import HEADER_KEY, CombinedModel, DeepfakeModel
from .scoring import ScoresFromLogits

FORMAT = "fakefinder-onnx/1"
FORMAT_KEY, DIGEST_KEY, COMPUTE_KEY = "fakefinder_format", "fakefinder_sha256", "fakefinder_compute"
OPSET = 18
INPUT, OUTPUT, FEATURES = "image", "logit", "features"
# The operators `export` writes for every registered base and head (default domain only; tests/test_onnx.py exports
# one member of each family with both poolings and checks its graph stays within these), plus a few plain tensor
# operators another PyTorch version may write for the same modules. No control flow (Loop, If, Scan), no custom
# domain: a graph using anything else was not written by `export`, and could run for ever.
OPERATORS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div", "Flatten",
    "Gather", "Gemm", "GlobalAveragePool", "HardSigmoid", "HardSwish", "Identity", "MatMul", "MaxPool", "Mul", "Pad",
    "Range", "ReduceMax", "ReduceMean", "Relu", "Reshape", "Shape", "Sigmoid", "Squeeze", "Sub", "Transpose",
    "Unsqueeze"})  # ReduceMax, ReduceMean: a combined model's largest member logit, or their mean


def require_onnx(what: str) -> None:
    """One line naming the extra to install when ONNX or ONNX Runtime is missing."""
    require("onnx", ("onnx", "onnxruntime"), what=what)


def _digest(proto, card_text: str, compute: str) -> str:
    """sha256 of the model without its metadata, then the card and the compute type: what loading checks."""
    bare = type(proto)()
    bare.CopyFrom(proto)
    del bare.metadata_props[:]
    h = hashlib.sha256(bare.SerializeToString(deterministic=True))
    h.update(b"\0" + card_text.encode() + b"\0" + compute.encode())
    return h.hexdigest()


def _stamp(proto, card: ModelCard, compute: str):
    """`proto` with the card, the format marker and the digest as its metadata (any earlier ones replaced)."""
    del proto.metadata_props[:]
    text = json.dumps(card.to_json())
    entries = {HEADER_KEY: text, FORMAT_KEY: FORMAT, COMPUTE_KEY: compute, DIGEST_KEY: _digest(proto, text, compute)}
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def _graph(module, example, *, what: str, output: str = OUTPUT):
    """A torch module taking (N, 3, S, S) traced to an ONNX ModelProto with a dynamic batch axis, quietly (the
    library never prints; the exporter's notes about optional operators are not ours to show)."""
    import logging
    import warnings

    import torch

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, verbose=False, opset_version=OPSET,
                                        input_names=[INPUT], output_names=[output], optimize=True,
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},))
        return program.model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter's failures are many and long: one line
        raise UsageError(f"cannot export {what} to ONNX ({one_line(exc, limit=200)})") from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _scored(backbone, pool: str, head):
    """A torch module: the base, its pooling and (if given) the head, on the CPU."""
    import torch

    from .head import pooled

    class Scored(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base, self.head = backbone.module.to("cpu"), head if head is not None else torch.nn.Identity()

        def forward(self, x):
            return self.head(pooled(self.base.forward_features(x), pool))

    return Scored()


def _combined(members, rule: str):
    """A torch module: the members' calibrated logits combined by `rule`, the largest or their mean
    (`modelfile.CombinedModel.face_logits`)."""
    import torch

    class Combined(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = torch.nn.ModuleList(_scored(m.backbone, m.card.head.pool, m.head) for m in members)
            self.maps = [(m.card.calibration.scale, m.card.calibration.shift) for m in members]

        def forward(self, x):
            logits = torch.stack([scale * part(x) + shift for part, (scale, shift) in zip(self.parts, self.maps)])
            return logits.amax(0) if rule == "max" else logits.mean(0)

    return Combined()


def _traced(backbone, pool: str, head, *, what: str, output: str):
    """The ONNX ModelProto of the base, its pooling and (if given) the head, on the CPU at fp32."""
    import torch

    side = backbone.input_size
    return _graph(_scored(backbone, pool, head), torch.zeros(2, 3, side, side), what=what, output=output)


def detector_graph(model: DeepfakeModel | CombinedModel):
    """The ModelProto of `model` (a DeepfakeModel, or a combined.CombinedModel: every member) at fp32, stamped with
    its card."""
    import torch

    require_onnx("exporting to ONNX")
    model.to("cpu")
    if isinstance(model, CombinedModel):
        side = model.card.base.input_size
        proto = _graph(_combined(model.members, model.card.combine_rule), torch.zeros(2, 3, side, side), output=OUTPUT,
                       what=f"the combined detector ({model.card.backbone})")
    else:
        proto = _traced(model.backbone, model.card.head.pool, model.head, output=OUTPUT,
                        what=f"the {model.card.base.backbone} detector")
    return _stamp(proto, model.card, "fp32")


def base_graph(backbone, pool: str):
    """The ModelProto of a frozen base and its pooling at fp32: (N, 3, S, S) -> (N, features), unstamped."""
    require_onnx("extracting features with ONNX Runtime")
    return _traced(backbone, pool, None, what=f"the {backbone.spec.name} base", output=FEATURES)


def base_features(sess, batch: np.ndarray) -> np.ndarray:
    """A base graph's (`base_graph`) pooled features of a preprocessed NCHW float32 batch."""
    return sess.run([FEATURES], {INPUT: np.ascontiguousarray(batch)})[0]


def export_onnx(model: DeepfakeModel | CombinedModel, path: str | Path) -> Path:
    """Write `model` as one ONNX file (atomically, readable as any file the user creates). Raises UsageError."""
    path = Path(path)
    _files.write_bytes(path, detector_graph(model).SerializeToString())
    return path


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def verdict_threads() -> int:
    """ONNX Runtime's threads while a verdict's frames are decoded in a thread beside it: one core left to the
    decoder (at least one thread)."""
    return max(1, _cores() - 1)


def session(data: bytes, *, threads: int | None = None):
    """An ONNX Runtime CPU session over a serialised model: `threads` (default every core this process may use),
    every graph optimisation."""
    import onnxruntime as ort

    ort.disable_telemetry_events()  # a verdict sends nothing anywhere (ONNX Runtime 1.32 ships Microsoft's 1DS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cores()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the library never prints
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


# (time.monotonic() deadline, what to say when it passes) of the ONNX Runtime calls made in this context
_DEADLINE: ContextVar[tuple[float, str] | None] = ContextVar("fakefinder_onnx_deadline", default=None)


@contextmanager
def deadline(at: float, message: str) -> Iterator[None]:
    """ONNX Runtime calls made in this context (thread) stop at `at` (`time.monotonic()`), one still running
    included, and raise DeadlineError(`message`): a check between frames cannot stop a call that never returns."""
    token = _DEADLINE.set((at, message))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _run(session, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """`session`'s output for `feeds`, stopped by ONNX Runtime's terminate flag at this context's `deadline`."""
    limit = _DEADLINE.get()
    if limit is None:
        return session.run([OUTPUT], feeds)[0]
    import onnxruntime as ort

    at, message = limit
    if time.monotonic() >= at:
        raise DeadlineError(message)
    options = ort.RunOptions()
    timer = threading.Timer(at - time.monotonic(), setattr, (options, "terminate", True))
    timer.daemon = True
    timer.start()
    try:
        return session.run([OUTPUT], feeds, options)[0]
    except Exception:
        if options.terminate:
            raise DeadlineError(message) from None
        raise
    finally:
        timer.cancel()


class OnnxModel(ScoresFromLogits):
    """A `scoring.ScoringModel` (card, threshold, face logits, calibrated P(fake)) computed by ONNX Runtime.
    Gradients, hence Grad-CAM heatmaps, are not available: not a `DifferentiableModel`."""

    device = "cpu"

    def __init__(self, proto, card: ModelCard, *, compute: str = "fp32", path: Path | None = None) -> None:
        self.card, self.compute, self.path = card, compute, path
        mean, std = NORMALIZATIONS[card.base.normalization]
        self.preprocess_one = Preprocess(card.base.input_size, tuple(mean), tuple(std))
        self.session = session(proto.SerializeToString(), threads=verdict_threads())

    @classmethod
    def of(cls, model: DeepfakeModel | CombinedModel) -> OnnxModel:
        """A PyTorch model exported in memory (seconds) and run by ONNX Runtime."""
        return cls(detector_graph(model), model.card)

    def face_logits(self, images: list[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Uncalibrated logits for BGR uint8 face crops of any size."""
        out = [_run(self.session, {INPUT: self.preprocess_one.batch(images[s:s + batch_size])})
               for s in range(0, len(images), batch_size)]
        return finite_scores(np.concatenate(out).astype(np.float64) if out else np.zeros(0))


def _model_proto_class():
    """onnx's ModelProto class, without importing the onnx package where it is not imported yet: its __init__
    imports ml_dtypes, which takes longer to import than all the rest of a cold `predict` on ONNX Runtime. The
    protobuf module (`onnx.onnx_ml_pb2`, which needs google.protobuf alone) is loaded from the package's folder
    under its own name, so that a later `import onnx` finds it and registers nothing twice."""
    import importlib.util
    import sys

    name = "onnx.onnx_ml_pb2"
    if name not in sys.modules:
        package = importlib.util.find_spec("onnx")
        folder = Path(package.origin).parent if package and package.origin else None
        spec = importlib.util.spec_from_file_location(name, folder / "onnx_ml_pb2.py") if folder else None
        if spec is None or spec.loader is None or not (folder / "onnx_ml_pb2.py").is_file():
            require_onnx("reading an ONNX model")
            import onnx

            return onnx.ModelProto
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name].ModelProto


def _parse_model(data: bytes):
    """An ONNX ModelProto from its bytes (what onnx.load_model_from_string does, for a model without external
    data). Raises DecodeError."""
    proto = _model_proto_class()()
    proto.ParseFromString(data)
    return proto


def _refuse(path: Path, why: str) -> UsageError:
    return UsageError(f"{path}: not an ONNX model fakefinder wrote ({why})")


def foreign_operator(proto) -> str | None:
    """The first operator in `proto` (its graph, any subgraph, any local function) that `export` never writes, as
    "domain.Op" or "Op"; None when every node is one of OPERATORS in the default domain."""
    graphs = [proto.graph, *proto.functions]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPERATORS:
                return f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            for attr in node.attribute:  # an allowed operator never has a subgraph, but look anyway
                graphs += [attr.g, *attr.graphs] if attr.HasField("g") else list(attr.graphs)
    return None


def load_onnx(path: str | Path) -> OnnxModel:
    """An ONNX file written by `export_onnx`, checked before ONNX Runtime sees it: its format marker, its card
    and its digest, its operators (OPERATORS only), and its input against the card. Raises UsageError (one
    line, naming the file)."""
    path = Path(path)
    return _session_of(path, *_checked(path))


def read_onnx_card(path: str | Path) -> ModelCard:
    """The card of an ONNX file written by `export_onnx`, checked as `load_onnx` checks the file, without starting
    ONNX Runtime on it."""
    return _checked(Path(path))[1]


def _checked(path: Path) -> tuple[object, ModelCard, str]:
    """(graph, card, compute) of a file `load_onnx` accepts; raises UsageError (one line, naming the file)."""
    require("onnx", ("onnxruntime",), what=f"the ONNX model {path.name}")  # onnx itself: see _model_proto_class
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise UsageError(f"{path}: model file not found")
    try:
        proto = _parse_model(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{path}: not an ONNX file ({type(exc).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(FORMAT_KEY) != FORMAT or HEADER_KEY not in meta:
        raise _refuse(path, "no fakefinder metadata" if FORMAT_KEY not in meta else f"format {meta[FORMAT_KEY]!r}")
    try:
        with options.without_registries():  # the graph is the base: this fakefinder need not know how to build it
            card = ModelCard.from_json(json.loads(meta[HEADER_KEY]))
    except (ValueError, UsageError) as exc:
        raise _refuse(path, f"its model card does not parse: {one_line(exc, limit=200, typed=False)}") from None
    compute = meta.get(COMPUTE_KEY, "")
    if meta.get(DIGEST_KEY) != _digest(proto, meta[HEADER_KEY], compute):
        raise _refuse(path, "its graph or card changed since it was written: the digest does not match")
    if (operator := foreign_operator(proto)) is not None:
        raise _refuse(path, f"its graph uses operator {operator[:60]!r}, which export never writes")
    inputs = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    side = card.base.input_size
    if len(inputs) != 1 or inputs[0][1:] != [3, side, side] or [o.name for o in proto.graph.output] != [OUTPUT]:
        raise _refuse(path, f"its graph does not take (N, 3, {side}, {side}) to a logit as its card implies")
    return proto, card, compute


def _session_of(path: Path, proto, card: ModelCard, compute: str) -> OnnxModel:
    """The checked graph given to ONNX Runtime; what it refuses is one line naming the file, not its traceback."""
    try:
        return OnnxModel(proto, card, compute=compute, path=path)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors have no common base but Exception
        raise _refuse(path, f"ONNX Runtime cannot load it: {one_line(exc, limit=200, typed=False)}") from None

