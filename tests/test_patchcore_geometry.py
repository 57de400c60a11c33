"""Where PatchCore's patches sit on the crop: receptive-field centres, per backbone.

Oracles are written by hand from each architecture (kernels, strides, padding), not
taken from the code under test, and checked against the network itself.
"""

import numpy as np
import pytest
import torch
import torchvision

from anodect.patchcore.model import PatchCore, PatchCoreSettings
from anodect.patchcore.backbones import build_backbone, feature_geometry
from anodect.patchcore.model import _resample, inner_patches, patch_scores_to_maps


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """ResNet-18 weights (random: none can be had offline) in torchvision's layout, head included."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


def _weights(backbone, resnet18_file, imgsim_resnet50):
    return {"efficientnet_lite0": None, "resnet18": resnet18_file, "resnet50": imgsim_resnet50}[backbone]


def _tf_same_centre(sizes_and_strides):
    """EfficientNet-Lite's 3x3 TensorFlow-'SAME' convolutions: the odd padding pixel goes after,
    so a stride-2 conv on an even input centres output i on input 2i + 1, on an odd one on 2i."""
    offset, step = 0.0, 1.0
    for n, stride in sizes_and_strides:
        if stride == 2:
            offset += step * (1 if n % 2 == 0 else 0)
            step *= 2
    return offset, step


@pytest.mark.parametrize("size", [(96, 112), (97, 113), (160, 199)])
def test_geometry_is_the_receptive_field_centre_derived_by_hand(size, resnet18_file, imgsim_resnet50):
    # ResNets: conv1 7x7/2 pad 3 and maxpool 3x3/2 pad 1 centre output i on input 2i; so do the
    # stride-2 3x3 convs (pad 1) of layer2 and layer3: cell i of layerN sits on pixel stride * i.
    for name, weights in (("resnet18", resnet18_file), ("resnet50", imgsim_resnet50)):
        module, _ = build_backbone(name, weights, layers=("layer1", "layer2", "layer3"))
        got = feature_geometry(module, size)
        assert [(g.offset, g.step) for g in got] == [((0.0, 0.0), (s, s)) for s in (4.0, 8.0, 16.0)]
    # EfficientNet-Lite0: stem 3x3/2, blocks.1 3x3/2 (-> blocks.2, stride 4), blocks.3 5x5/2 (-> blocks.4).
    module, _ = build_backbone("efficientnet_lite0", layers=("blocks.2",))
    (got,) = feature_geometry(module, size)
    for axis, n in enumerate(size):
        half = -(-n // 2)
        assert (got.offset[axis], got.step[axis]) == _tf_same_centre([(n, 2), (half, 2)])


def test_geometry_agrees_with_the_networks_own_gradient_centroid(imgsim_resnet50):
    """The centre of a cell's sensitivity (|d feature / d pixel| on a flat input) lies within
    2 px of the computed centre on each axis, for the default backbone and a real ResNet-50; the
    old grid (centres at (i + 0.5) * stride) was 3.5 px (layer2) and 7.5 px (layer3) off."""
    for name, weights, layer in (("efficientnet_lite0", None, "blocks.2"), ("resnet50", imgsim_resnet50, "layer2"),
                                 ("resnet50", imgsim_resnet50, "layer3")):
        module, _ = build_backbone(name, weights, layers=(layer,))
        size = (160, 192)
        (geo,) = feature_geometry(module, size)
        x = torch.zeros(1, 3, *size, requires_grad=True)
        (f,) = module(x)
        r, c = f.shape[-2] // 2, f.shape[-1] // 2
        (grad,) = torch.autograd.grad(f[0, :, r, c].pow(2).sum(), x)
        weight = grad[0].abs().sum(0).numpy()
        ys, xs = np.mgrid[: size[0], : size[1]]
        centroid = ((weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum())
        centre = (geo.offset[0] + geo.step[0] * r, geo.offset[1] + geo.step[1] * c)
        assert abs(centroid[0] - centre[0]) < 2 and abs(centroid[1] - centre[1]) < 2, (name, layer, centroid, centre)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18", "resnet50"])
def test_a_bright_pixel_is_mapped_where_it_is(backbone, resnet18_file, imgsim_resnet50):
    """A single bright pixel on a flat crop, placed on a patch centre derived by hand: that patch
    scores highest, and the map puts its score within one pixel of the bright pixel."""
    h, w, context = 96, 112, 16
    model = PatchCore(PatchCoreSettings(backbone=backbone, weights_path=_weights(backbone, resnet18_file,
                                                                                 imgsim_resnet50),
                                        coreset_fraction=1.0))
    model.fit(np.full((2, h, w), 100, np.uint8), context)
    # Hand-derived centres: ResNet layer2 cell i at 8 i; Lite0 blocks.2 on even sizes at 4 i + 3.
    step, offset = (4, 3) if backbone == "efficientnet_lite0" else (8, 0)
    for cell in ((10, 12), (9, 14)) if step == 4 else ((5, 6), (6, 7)):
        y, x = (offset + step * cell[0], offset + step * cell[1])
        crop = np.full((1, h, w), 100, np.uint8)
        crop[0, y, x] = 255
        feats = model.embed(crop)
        _, geo = model.geometry((h, w))
        rows, cols = inner_patches(geo, feats.shape[1:3], (h, w), context)
        patch = model.index.search(feats[:, rows, cols].reshape(-1, feats.shape[-1])).reshape(
            1, rows.stop - rows.start, cols.stop - cols.start)
        top = np.unravel_index(patch[0].argmax(), patch[0].shape)
        assert (top[0] + rows.start, top[1] + cols.start) == cell
        alone = np.zeros_like(patch)
        alone[0, top[0], top[1]] = 1.0
        m = patch_scores_to_maps(alone, geo, rows, cols, (h, w), context)[0]
        py, px = np.unravel_index(m.argmax(), m.shape)
        assert abs(py + context - y) <= 1 and abs(px + context - x) <= 1, (backbone, (y, x), (py, px))
        if backbone == "efficientnet_lite0":  # and the whole map of the default backbone too
            full = model.score(crop, context).maps[0]
            py, px = np.unravel_index(full.argmax(), full.shape)
            assert abs(py + context - y) <= 1 and abs(px + context - x) <= 1


def test_deeper_layers_are_read_at_the_first_layers_centres():
    """A stride-16 map holding its own cell index is read at the stride-8 centres: value (8 i - a16) / 16."""
    from anodect.patchcore.backbones import Geometry

    fine, coarse = Geometry((0.0, 3.0), (8.0, 8.0)), Geometry((0.0, 7.0), (16.0, 16.0))
    rows = torch.arange(5, dtype=torch.float32).view(1, 1, 5, 1).expand(1, 1, 5, 6)
    cols = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6).expand(1, 1, 5, 6)
    out = _resample(torch.cat([rows, cols], 1), coarse, fine, (10, 12))
    np.testing.assert_allclose(out[0, 0, :, 0].numpy(), np.clip(np.arange(10) * 8 / 16, 0, 4), atol=1e-5)
    np.testing.assert_allclose(out[0, 1, 0, :].numpy(), np.clip((3 + 8 * np.arange(12) - 7) / 16, 0, 5),
                               atol=1e-5)


def test_a_feature_extractor_file_without_the_head_loads_and_missing_tensors_are_named(tmp_path, imgsim_resnet50):
    """``patchcore.weights_path``: a ResNet-50 file with a wrapper prefix (``module.pre.``) and another
    head (fc 2048->768) loads; the head and deeper stages are not required; a file lacking a
    tensor the features use is refused, naming it."""
    from anodect.patchcore.backbones import load_state_dict

    module, info = build_backbone("resnet50", imgsim_resnet50, layers=("layer2", "layer3"))
    state = load_state_dict(imgsim_resnet50)
    assert torch.equal(module.stem[0].weight, state["module.pre.conv1.weight"])
    assert torch.equal(module.stages[2][0].conv2.weight, state["module.pre.layer3.0.conv2.weight"])
    # Features only: no fc, no layer4, no prefix.
    trimmed = {k[len("module.pre."):]: v for k, v in state.items() if not k.startswith(("module.pre.fc.",
                                                                                        "module.pre.layer4."))}
    torch.save(trimmed, tmp_path / "features.pth")
    other, _ = build_backbone("resnet50", str(tmp_path / "features.pth"), layers=("layer2", "layer3"))
    assert torch.equal(other.stages[1][0].conv1.weight, module.stages[1][0].conv1.weight)
    del trimmed["layer3.1.bn2.running_var"]
    torch.save(trimmed, tmp_path / "holed.pth")
    build_backbone("resnet50", str(tmp_path / "holed.pth"), layers=("layer2",))  # layer3 not used: fine
    with pytest.raises(ValueError, match=r"holed\.pth.*1 tensor\(s\) missing: layer3\.1\.bn2\.running_var"):
        build_backbone("resnet50", str(tmp_path / "holed.pth"), layers=("layer2", "layer3"))
    with pytest.raises(ValueError, match="wrong shape"):
        build_backbone("resnet18", str(tmp_path / "features.pth"), layers=("layer2",))


def test_counting_the_padding_changes_only_patches_at_the_crop_edge():
    """``count_include_pad`` changes the 3x3 average of border cells only. With the pipeline's
    16 px of context those cells lie outside the ROI and are never scored, so scores and maps are
    identical either way; without context they differ (which is where PatchCore's reference
    code, counting the padding, was measured better)."""
    rng = np.random.default_rng(4)
    train = rng.integers(60, 200, (6, 64, 80), dtype=np.uint8)
    test = rng.integers(60, 200, (3, 64, 80), dtype=np.uint8)
    out = {}
    for pad in (False, True):
        for context in (0, 16):
            model = PatchCore(PatchCoreSettings(coreset_fraction=0.5, count_include_pad=pad)).fit(train, context)
            out[pad, context] = model.score(test, context)
    np.testing.assert_array_equal(out[False, 16].scores, out[True, 16].scores)
    np.testing.assert_array_equal(out[False, 16].maps, out[True, 16].maps)
    assert not np.array_equal(out[False, 0].maps, out[True, 0].maps)
