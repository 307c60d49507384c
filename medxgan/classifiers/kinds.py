"""One safe loader per classifier kind, with its lazy imports and one-line errors.

- :func:`_load_torchscript`: a ``torch.jit`` file (+ the output names it carries);
- :func:`_load_state_dict_model`: ``torchvision`` / ``small_cnn`` (an architecture + a
  ``state_dict``; the stem's channels from the first conv weight);
- :func:`_load_onnx`: an ONNX file converted with ``onnx2torch`` (gradients flow; a file of
  an opset whose operators onnx2torch lacks is first converted down to
  :data:`ONNX2TORCH_OPSET` with ``onnx.version_converter``), and
  :func:`_compare_onnxruntime`, its check against ``onnxruntime`` (on the original file)
  after wrapping;
- :func:`_load_torchxrayvision`: a TorchXRayVision DenseNet from a local ``state_dict`` or the
  package's cache file (never a download).

Every file read with ``torch.load`` uses ``weights_only=True`` (:func:`_load_state_dict`,
:func:`_load_pickled_module_state`), so a pickled full model (or any pickle that would run
code) is refused, never unpickled. Each failure is a one-line
:class:`~medxgan.config.classifier.ClassifierLoadError`. The optional packages (onnx,
onnx2torch, onnxruntime, torchxrayvision) are imported only when their kind is loaded.
:func:`medxgan.classifiers.load.load_classifier` picks the loader of ``spec.kind``.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from medxgan.config.classifier import ClassifierLoadError, ClassifierSpec, MeanStd, _split_parent
from medxgan.storage import Store, one_line

if TYPE_CHECKING:
    from medxgan.classifiers.wrapper import AuditedClassifier


def _load_torchscript(data: bytes, spec: ClassifierSpec) -> tuple[nn.Module, list[str] | None]:
    """(model, output names it carries or None) of a TorchScript file's bytes, on the CPU."""
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, still a user format
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise ClassifierLoadError(f"{spec.path}: not a TorchScript file "
                                  f"({type(exc).__name__}: {one_line(exc)})") from None
    return model, _script_names(model)


def _load_state_dict_model(data: bytes, spec: ClassifierSpec) -> nn.Module:
    """A torchvision / SmallCNN network with the state_dict's weights; the stem's channels
    come from the first conv weight unless the spec (or its preset) sets ``in_channels``."""
    from medxgan.classifiers.small_cnn import build_model

    state = _load_state_dict(data, spec.path)
    arch = spec.arch or "small_cnn"
    stem = next((int(v.shape[1]) for k, v in state.items()
                 if k.endswith("weight") and v.ndim == 4), None)
    if stem is not None and stem != spec.in_channels:
        if "in_channels" in spec.model_fields_set or stem not in (1, 3):
            raise ClassifierLoadError(f"{spec.path}: state_dict does not fit {arch} with "
                                      f"{spec.in_channels} input channel(s): its first conv "
                                      f"takes {stem}")
        spec.in_channels = stem
        _check_norm_channels(spec)
    num_outputs = spec.num_outputs or _guess_outputs(state)
    try:
        model = build_model(arch, spec.in_channels, num_outputs)
    except ValueError as exc:
        raise ClassifierLoadError(f"{spec.path}: {one_line(exc)}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ClassifierLoadError(f"{spec.path}: state_dict does not fit "
                                  f"{arch} with {spec.in_channels} "
                                  f"input channel(s) and {num_outputs} output(s): "
                                  f"{one_line(exc)}") from None
    return model


def _check_norm_channels(spec: ClassifierSpec) -> None:
    norm = spec.normalisation
    if isinstance(norm, MeanStd):
        for v in (norm.mean, norm.std):
            if isinstance(v, list) and len(v) not in (1, spec.in_channels):
                raise ClassifierLoadError(f"{spec.path}: per-channel normalisation has "
                                          f"{len(v)} values but the model takes "
                                          f"{spec.in_channels} channel(s)")


def _script_names(model: nn.Module) -> list[str] | None:
    """Output names a TorchScript model carries as a list-of-str attribute, if any."""
    for attr in ("pathologies", "targets", "outputs", "class_names", "classes"):
        try:
            v = getattr(model, attr)
        except (AttributeError, RuntimeError):
            continue
        if isinstance(v, (list, tuple)) and v and all(isinstance(n, str) for n in v):
            return list(v)
    return None


def _missing(package: str, extra: str, kind: str) -> ClassifierLoadError:
    return ClassifierLoadError(f"kind {kind!r} needs the package {package!r}: pip install "
                               f"'medxgan-audit[{extra}]'")


def _load_onnx(data: bytes, spec: ClassifierSpec) -> nn.Module:
    """An ONNX file as a differentiable torch module (onnx2torch); a fixed batch of 1 is
    served image by image. Any opset onnxruntime runs: where onnx2torch lacks an operator
    version of the file's opset, the model is converted down to :data:`ONNX2TORCH_OPSET`
    first. The module's ``onnx_opset`` records ``{"file": opset, "converted_to": 17 | None}``."""
    try:
        import onnx
    except ImportError:
        raise _missing("onnx", "onnx", "onnx") from None
    try:
        from onnx2torch import convert
    except ImportError:
        raise _missing("onnx2torch", "onnx", "onnx") from None
    try:
        proto = onnx.load_from_string(data)
        graph_inputs = {i.name for i in proto.graph.initializer}
        inp = next(i for i in proto.graph.input if i.name not in graph_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise ClassifierLoadError(f"{spec.path}: not an ONNX model ({type(exc).__name__}: "
                                  f"{one_line(exc)[:160]})") from None
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inp.type.tensor_type.shape.dim]
    if len(dims) == 4:
        want = (spec.in_channels, spec.input_size, spec.input_size)
        for got, w, what in zip(dims[1:], want, ("in_channels", "input_size", "input_size")):
            if got is not None and got != w:
                raise ClassifierLoadError(f"{spec.path}: the ONNX input is "
                                          f"{tuple(d or '?' for d in dims)}, the spec says "
                                          f"{what}={w} (in_channels={want[0]}, "
                                          f"input_size={want[1]})")
    _inline_identity_initializers(proto)
    opset = _default_opset(proto)
    try:
        model = _convert(convert, proto)
        converted_to = None
    except Exception as exc:  # noqa: BLE001 - an operator (version) onnx2torch lacks, ...
        first = f"{type(exc).__name__}: {one_line(exc)[:200]}"
        if opset is None or opset <= ONNX2TORCH_OPSET:
            raise ClassifierLoadError(f"{spec.path}: onnx2torch cannot convert it ({first}); "
                                      "export it as TorchScript instead") from None
        model = _convert_down(convert, proto, opset, spec, first)
        converted_to = ONNX2TORCH_OPSET
    if dims and dims[0] == 1:
        model = _PerImage(model)
    model.onnx_opset = {"file": opset, "converted_to": converted_to}  # check-classifier
    return model


ONNX2TORCH_OPSET = 17
"""The opset a file is converted down to (``onnx.version_converter``) when onnx2torch lacks
a converter for an operator version of its own opset (torch 2.14's ``torch.onnx.export``
writes opset 20, whose ``Constant``/``Identity``/``ReduceMean`` onnx2torch 1.5 does not
take). The onnxruntime agreement check always runs on the original file."""


def _default_opset(proto) -> int | None:
    """The version of the default ONNX domain the model imports (None: not declared)."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                None)


def _convert(convert, proto) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(proto)


def _convert_down(convert, proto, opset: int, spec: ClassifierSpec, first: str) -> nn.Module:
    """onnx2torch of ``proto`` converted from ``opset`` down to :data:`ONNX2TORCH_OPSET`; one
    line naming both failures when that does not convert either."""
    from onnx import version_converter

    try:
        down = version_converter.convert_version(proto, ONNX2TORCH_OPSET)
        _inline_identity_initializers(down)
        return _convert(convert, down)
    except Exception as exc:  # noqa: BLE001 - an operator the version converter lacks, ...
        raise ClassifierLoadError(
            f"{spec.path}: onnx2torch cannot convert it at opset {opset} ({first}) nor after "
            f"onnx.version_converter to opset {ONNX2TORCH_OPSET} ({type(exc).__name__}: "
            f"{one_line(exc)[:160]}); export it with torch.onnx.export(..., opset_version="
            f"{ONNX2TORCH_OPSET}) or as TorchScript instead") from None


def _inline_identity_initializers(proto) -> None:
    """torch.onnx.export deduplicates equal weights into ``Identity`` nodes of one
    initializer (e.g. the zero biases of BatchNorm folded into convs); onnx2torch wants
    weights as initializers, so each such node becomes a copy of its initializer."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits:
            copy = type(inits[node.input[0]])()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            inits[copy.name] = copy
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


class _PerImage(nn.Module):
    """Serves a network exported with a fixed batch of 1 one image at a time."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x[i:i + 1]) for i in range(x.shape[0])])


def _compare_onnxruntime(f: AuditedClassifier, data: bytes, n: int = 4) -> None:
    """Outputs of the converted network vs onnxruntime on a seeded batch of images in [0, 1]:
    refused when raw outputs or positive logits differ by more than ``onnx_tolerance``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise _missing("onnxruntime", "onnx", "onnx") from None
    spec = f.spec
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, spec.input_size, spec.input_size, generator=g)
    with torch.no_grad():
        x = f.preprocess(images)
        ours = f.model(x).float()
        feed = x.numpy().astype("float32")
        name = sess.get_inputs()[0].name
        fixed = sess.get_inputs()[0].shape[0] == 1
        theirs = [sess.run(None, {name: feed[i:i + 1] if fixed else feed})[0]
                  for i in (range(n) if fixed else [0])]
        import numpy as np

        theirs = torch.from_numpy(np.concatenate(theirs)).float()
        if theirs.shape != ours.shape:
            raise ClassifierLoadError(f"{spec.path}: onnxruntime gives outputs "
                                      f"{tuple(theirs.shape)}, the conversion "
                                      f"{tuple(ours.shape)}")
        diff = max(float((ours - theirs).abs().max()),
                   float((f._to_logit(ours) - f._to_logit(theirs)).abs().max()))
    if not diff <= spec.onnx_tolerance:
        raise ClassifierLoadError(f"{spec.path}: refused: the onnx2torch conversion differs "
                                  f"from onnxruntime by {diff:.3g} (max abs diff of outputs "
                                  f"and logits on {n} images; tolerance "
                                  f"{spec.onnx_tolerance:g})")


#: Classes a TorchXRayVision cache file (a pickled full DenseNet) may name; unpickled with
#: ``weights_only=True`` and only these allowed, never arbitrary code.
def _xrv_safe_globals() -> list:
    import collections

    import torchxrayvision as xrv

    m = xrv.models
    return [m.DenseNet, m._DenseLayer, m._DenseBlock, m._Transition, nn.Sequential, nn.Conv2d,
            nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, set,
            collections.OrderedDict]


def _load_torchxrayvision(spec: ClassifierSpec) -> tuple[nn.Module, list[str], bytes]:
    """(model, pathologies, file bytes) of a TorchXRayVision DenseNet built with
    ``weights=None`` and loaded from ``spec.path`` or the package's cache file."""
    where = f"torchxrayvision:{spec.arch}"
    saved = warnings.filters[:]  # the package silences every warning when imported
    try:
        import torchxrayvision as xrv
    except ImportError:
        raise _missing("torchxrayvision", "xrv", "torchxrayvision") from None
    finally:
        warnings.filters[:] = saved
    urls = xrv.models.model_urls
    if spec.arch not in urls or not spec.arch.startswith("densenet"):
        dense = sorted(k for k in urls if k.startswith("densenet"))
        raise ClassifierLoadError(f"{where}: not a TorchXRayVision DenseNet name; one of "
                                  f"{', '.join(dense)} (other models: export TorchScript)")
    info = urls[spec.arch]
    names = [str(n) for n in info["labels"]]
    model = xrv.models.DenseNet(weights=None, num_classes=len(names),
                                **xrv.models.get_densenet_params(spec.arch))
    if spec.path:
        data = _read(spec.path)
        state = _load_state_dict(data, spec.path)
    else:
        cached = os.path.join(os.path.expanduser(xrv.utils.get_cache_dir()),
                              os.path.basename(info["weights_url"]))
        if not os.path.isfile(cached):
            raise ClassifierLoadError(f"{where}: no weights: set 'path' to a state_dict file "
                                      f"(torch.save(model.state_dict(), ...)) or put "
                                      f"{cached}; weights are never downloaded")
        with open(cached, "rb") as fh:
            data = fh.read()
        spec.path = cached
        state = _load_pickled_module_state(data, cached, _xrv_safe_globals())
    state.pop("op_threshs", None)  # raw logits: the audit calibrates nothing itself
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ClassifierLoadError(f"{spec.path}: state_dict does not fit TorchXRayVision "
                                  f"{spec.arch}: {one_line(exc)}") from None
    return model, names, data


def _load_pickled_module_state(data: bytes, where: str, allowed: list
                               ) -> dict[str, torch.Tensor]:
    """A state_dict, or the state of a full module pickled with only ``allowed`` classes
    (``weights_only=True`` with those globals allowed; anything else is refused)."""
    try:
        return _load_state_dict(data, where)
    except ClassifierLoadError:
        pass
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ClassifierLoadError(f"{where}: refused: neither a state_dict nor a module of "
                                  f"the allowed classes loadable with weights_only=True: "
                                  f"{type(exc).__name__}: {one_line(exc)[:160]}") from None
    if not isinstance(obj, nn.Module):
        raise ClassifierLoadError(f"{where}: holds {type(obj).__name__}, not a model")
    for mod in obj.modules():  # modules pickled by old torch versions
        if not hasattr(mod, "_non_persistent_buffers_set"):
            mod._non_persistent_buffers_set = set()
    return dict(obj.state_dict())


def _load_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """A state_dict from bytes with ``weights_only=True``; anything else is refused."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, zip errors, TorchScript files
        raise ClassifierLoadError(
            f"{where}: refused: not a plain state_dict loadable with weights_only=True "
            f"(a pickled full model or other pickle is never unpickled; save "
            f"model.state_dict() instead): {type(exc).__name__}: "
            f"{one_line(exc)[:160]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClassifierLoadError(f"{where}: file holds {type(state).__name__}, "
                                  "not a state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _guess_outputs(state: dict[str, torch.Tensor]) -> int:
    """Output columns from the last 2-D weight of a state_dict (probabilities specs)."""
    last = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(last[-1].shape[0]) if last else 1


def _read(path: str) -> bytes:
    folder, name = _split_parent(path)
    try:
        return Store(folder).read_bytes(name)
    except FileNotFoundError:
        raise ClassifierLoadError(f"classifier file {path} does not exist") from None
