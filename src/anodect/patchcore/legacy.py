"""The original tool's PatchCore files, loaded safely and scored as the original did.

``patchcore_params.pkl`` is read by an unpickler that admits plain containers and
numbers only: any attempt to import (the way a malicious pickle runs code) is
refused. ``nnscorer_search_index.faiss`` is parsed by hand (a flat L2 index) and
checked against its header. Scoring reproduces original-tool.md §1–2: Pillow
bilinear resize to ``resize_size`` (H, W), ImageNet normalisation, ResNet
layer2 + layer3 through the upstream patch/pooling chain, the batch-norm update
that the original's loader applies by accident, squared L2 to the nearest bank
vector, image score = max patch score, map = bilinear to ``input_shape`` then
Gaussian σ=4.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

from ..crops import trim_context
from .backbones import IMAGENET_MEAN, IMAGENET_STD, _TORCHVISION, load_resnet_weights, torchvision_state
from .model import ScoreResult
from .files import _HEADER, UnsafeModelFile, load_params  # noqa: F401 - re-exported: the original's files
from .plugin import INDEX_FILE, PARAMS_FILE, is_original_model
from .search import NearestNeighbourIndex

log = logging.getLogger(__name__)

def write_params(path: str | Path, params: dict) -> None:
    """Write params exactly as the original did (pickle protocol 5 of a plain dict)."""
    Path(path).write_bytes(pickle.dumps(params, protocol=pickle.HIGHEST_PROTOCOL))


def read_flat_index(path: str | Path) -> np.ndarray:
    """The vectors of a faiss ``IndexFlatL2`` file, parsed without faiss.

    Raises:
        UnsafeModelFile: another index type, or sizes that do not add up.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise UnsafeModelFile(f"{path}: too short for a faiss index ({len(data)} bytes)")
    fourcc, d, ntotal, _, _, _, metric, n = _HEADER.unpack_from(data, 0)
    if fourcc != b"IxF2":
        raise UnsafeModelFile(f"{path}: index type {fourcc!r} is not a flat L2 index (IxF2)")
    if metric != 1 or n != ntotal * d or len(data) != _HEADER.size + 4 * n:
        raise UnsafeModelFile(
            f"{path}: inconsistent header (d={d}, ntotal={ntotal}, n={n}, metric={metric}, {len(data)} bytes)")
    return np.frombuffer(data, "<f4", count=n, offset=_HEADER.size).reshape(ntotal, d).copy()


def write_flat_index(path: str | Path, vectors: np.ndarray) -> None:
    """Write vectors as faiss's own writer does for an ``IndexFlatL2``."""
    import faiss

    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(path))


def _patchify(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, C, h, w] → [B, h*w, C, 3, 3] zero-padded 3x3 neighbourhoods (upstream PatchMaker)."""
    b, c, h, w = x.shape
    unfolded = F.unfold(x, kernel_size=3, stride=1, padding=1)
    return unfolded.reshape(b, c, 3, 3, -1).permute(0, 4, 1, 2, 3), (h, w)


class OriginalPatchCore:
    """A PatchCore model in the original tool's format, scored as the original scored it.

    Args:
        folder: holds ``patchcore_params.pkl`` and ``nnscorer_search_index.faiss``.
        resize_size: (H, W) the crops are resized to (the original's ``resize_size``).
        weights_path: ImageNet state dict of the backbone (default: torchvision's cache).
        download_weights: let torchvision download the weights.
        device: torch device.
        batch_size: crops per forward pass.
    """

    def __init__(self, folder: str | Path, resize_size=(168, 128), weights_path: str | None = None,
                 download_weights: bool = False, device: torch.device | str = "cpu", batch_size: int = 8):
        import torchvision

        folder = Path(folder)
        self.params = load_params(folder / PARAMS_FILE)
        bank = read_flat_index(folder / INDEX_FILE)
        name = self.params["backbone.name"]
        if name not in _TORCHVISION:
            raise UnsafeModelFile(f"{folder / PARAMS_FILE}: backbone {name!r} is not supported ({list(_TORCHVISION)})")
        if list(self.params["layers_to_extract_from"]) != ["layer2", "layer3"]:
            raise UnsafeModelFile(f"{folder / PARAMS_FILE}: layers {self.params['layers_to_extract_from']} "
                                  "differ from the original's layer2+layer3")
        if self.params["patchsize"] != 3 or self.params["patchstride"] != 1:
            raise UnsafeModelFile(f"{folder / PARAMS_FILE}: patch size/stride other than 3/1")
        if bank.shape[1] != self.params["target_embed_dimension"]:
            raise UnsafeModelFile(f"{folder / INDEX_FILE}: vectors have {bank.shape[1]} dims, params say "
                                  f"{self.params['target_embed_dimension']}")
        if "anomaly_scorer_num_nn" in self.params and self.params["anomaly_scorer_num_nn"] != 1:
            log.warning("%s: anomaly_scorer_num_nn=%s is ignored, as the original ignored it (k=1)",
                        folder / PARAMS_FILE, self.params["anomaly_scorer_num_nn"])
        self.device = torch.device(device)
        self.resize_size = tuple(int(v) for v in resize_size)
        self.batch_size = batch_size
        state, self.weights_id = torchvision_state(name, weights_path, download_weights)
        net = getattr(torchvision.models, name)(weights=None)
        # The original's features stop at layer3; the head and layer4 are not needed.
        load_resnet_weights(net, state, ("layer2", "layer3"), weights_path or self.weights_id)
        self.net = net.to(self.device)
        self._adapt_batch_norm()
        self.index = NearestNeighbourIndex(bank, self.device)
        self.bank_size = len(bank)
        self.metadata = {"format": "original", "backbone": name, "weights_id": self.weights_id,
                         "input_shape": list(self.params["input_shape"]), "bank_size": self.bank_size,
                         "resize_size": list(self.resize_size)}

    @torch.no_grad()
    def _adapt_batch_norm(self) -> None:
        """Reproduce the one BN running-stat update the original's loader makes.

        Its ``feature_dimensions`` pushes ``ones(1, *input_shape)`` through the backbone
        in train mode up to layer3, so every BN of conv1..layer3 moves by momentum 0.1
        towards that batch; the memory bank was built with those statistics.
        """
        self.net.train()
        x = torch.ones(1, *self.params["input_shape"], device=self.device)
        x = self.net.maxpool(self.net.relu(self.net.bn1(self.net.conv1(x))))
        self.net.layer3(self.net.layer2(self.net.layer1(x)))
        self.net.eval()

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """Grey uint8 crops → the original's input tensor [N, 3, H, W] (Pillow resize)."""
        h, w = self.resize_size
        mean = np.array(IMAGENET_MEAN, np.float32)
        std = np.array(IMAGENET_STD, np.float32)
        out = np.empty((len(crops), 3, h, w), np.float32)
        for i, crop in enumerate(crops):
            rgb = Image.fromarray(np.ascontiguousarray(crop)).convert("RGB").resize((w, h), Image.BILINEAR)
            arr = np.asarray(rgb, np.float32) / 255.0
            out[i] = ((arr - mean) / std).transpose(2, 0, 1)
        return torch.from_numpy(out).to(self.device)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[np.ndarray, tuple[int, int]]:
        """Upstream ``PatchCore._embed``: [N, 3, H, W] → ([N * h2 * w2, target_dim], (h2, w2))."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        f2 = net.layer2(net.layer1(x))
        f3 = net.layer3(f2)
        p2, (h2, w2) = _patchify(f2)
        p3, (h3, w3) = _patchify(f3)
        b, c3 = p3.shape[0], p3.shape[2]
        p3 = p3.reshape(b, h3, w3, c3, 3, 3).permute(0, 3, 4, 5, 1, 2).reshape(-1, h3, w3)
        p3 = F.interpolate(p3.unsqueeze(1), size=(h2, w2), mode="bilinear", align_corners=False).squeeze(1)
        p3 = p3.reshape(b, c3, 3, 3, h2, w2).permute(0, 4, 5, 1, 2, 3).reshape(b, h2 * w2, c3, 3, 3)
        dim = int(self.params["pretrain_embed_dimension"])
        pooled = [F.adaptive_avg_pool1d(p.reshape(-1, 1, p[0, 0].numel()), dim).squeeze(1) for p in (p2, p3)]
        stacked = torch.stack(pooled, dim=1).reshape(-1, 1, 2 * dim)
        feats = F.adaptive_avg_pool1d(stacked, int(self.params["target_embed_dimension"])).reshape(-1, int(
            self.params["target_embed_dimension"]))
        return feats.cpu().numpy(), (h2, w2)

    def score(self, crops: np.ndarray, context: int = 0) -> ScoreResult:
        """Scores and maps of grey crops [N, h, w]; maps are resized back to (h, w).

        The original ignores anything around the ROI, so ``context`` pixels are cut off first.
        """
        crops = trim_context(crops, context)
        n, h, w = crops.shape
        scores = np.zeros(n, np.float32)
        maps = np.zeros((n, h, w), np.float32)
        for start in range(0, n, self.batch_size):
            batch = crops[start:start + self.batch_size]
            patch, masks = self._patches_and_masks(batch)
            # The original's mask is input_shape-sized (167x128 as HxW, a stretched
            # crop); back to the crop's own pixels so maps align with the ROI.
            back = F.interpolate(torch.from_numpy(masks).unsqueeze(1), size=(h, w), mode="bilinear",
                                 align_corners=False)[:, 0].numpy()
            maps[start:start + len(batch)] = back
            # The original scores an image by its highest patch; the blurred mask's
            # maximum would be lower, so the score comes from the patches.
            scores[start:start + len(batch)] = patch.reshape(len(batch), -1).max(1)
        return ScoreResult(scores, maps)

    def original_masks(self, crops: np.ndarray) -> np.ndarray:
        """Masks exactly as the original returned them (``input_shape``-sized), for comparison."""
        return self._patches_and_masks(crops)[1]

    def _patches_and_masks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patch distances [N, gh, gw] and the original's masks [N, *input_shape].

        The one place the original's map pipeline is written: bilinear stretch of
        the patch distances to ``input_shape``, then a Gaussian blur σ=4. (PatchCore
        proper places patch scores on their receptive-field centres instead:
        ``model.patch_scores_to_maps``.)
        """
        mask_size = tuple(int(v) for v in self.params["input_shape"][-2:])
        feats, (gh, gw) = self.embed(self.preprocess(crops))
        patch = self.index.search(feats).reshape(len(crops), gh, gw)
        up = F.interpolate(torch.from_numpy(patch).unsqueeze(1), size=mask_size, mode="bilinear",
                           align_corners=False)[:, 0].numpy()
        return patch, np.stack([scipy.ndimage.gaussian_filter(m, sigma=4) for m in up])


__all__ = ["OriginalPatchCore", "UnsafeModelFile", "is_original_model", "load_params", "read_flat_index",
           "write_flat_index", "write_params"]
