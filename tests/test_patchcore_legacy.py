"""The original tool's model files: safe loading and the original's scores.

The reference below is written from original-tool.md §1–2 step by step (explicit
3x3 neighbourhoods, the documented bin means, faiss search), independently of
``anodect.patchcore.legacy``; files are written in the original's format with
faiss's own writer and pickle protocol 5, as the original wrote them.
"""

import math
import os
import pickle

import faiss
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from anodect.patchcore.legacy import (INDEX_FILE, PARAMS_FILE, OriginalPatchCore, UnsafeModelFile, load_params,
                                      read_flat_index, write_flat_index, write_params)

PARAMS = {
    "backbone.name": "resnet50",
    "layers_to_extract_from": ["layer2", "layer3"],
    "input_shape": (3, 167, 128),
    "pretrain_embed_dimension": 4096,
    "target_embed_dimension": 1024,
    "patchsize": 3,
    "patchstride": 1,
    "anomaly_scorer_num_nn": 1,
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """ResNet-50 weights standing in for ImageNet's (none can be downloaded here)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    # Non-trivial BN statistics, so the batch-norm update of the original matters.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "resnet50-test.pth"
    torch.save(net.state_dict(), path)
    return path


def _reference_net(weights_path):
    net = torchvision.models.resnet50(weights=None)
    net.load_state_dict(torch.load(weights_path, weights_only=True))
    # original-tool.md §2: one train-mode forward of ones(1,3,167,128) through layer3.
    net.train()
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(torch.ones(1, 3, 167, 128)))))
        net.layer3(net.layer2(net.layer1(x)))
    return net.eval()


def _reference_input(crop):
    img = Image.fromarray(crop).convert("RGB").resize((128, 168), Image.BILINEAR)
    arr = (np.asarray(img, np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32))[None]


def _bins(rows, out):
    """Bin i of each row = mean over [floor(i*L/out), ceil((i+1)*L/out)), as original-tool.md states."""
    n = rows.shape[1]
    start = np.array([math.floor(i * n / out) for i in range(out)])
    end = np.array([math.ceil((i + 1) * n / out) for i in range(out)])
    cs = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(rows.astype(np.float64), axis=1)], axis=1)
    return (cs[:, end] - cs[:, start]) / (end - start)


def _neighbourhoods(f):
    """[C, h, w] → [h*w, C*9] zero-padded 3x3 neighbourhoods, order (c, ky, kx)."""
    c, h, w = f.shape
    padded = np.pad(f, ((0, 0), (1, 1), (1, 1)))
    out = np.empty((h * w, c, 3, 3), np.float32)
    for y in range(h):
        for x in range(w):
            out[y * w + x] = padded[:, y:y + 3, x:x + 3]
    return out.reshape(h * w, -1)


def _reference_embed(net, crop):
    with torch.no_grad():
        x = _reference_input(crop)
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        f2 = net.layer2(net.layer1(x))[0].numpy()
        f3 = net.layer3(torch.from_numpy(f2)[None])[0].numpy()
    u2 = _neighbourhoods(f2)
    c3, h3, w3 = f3.shape
    u3 = _neighbourhoods(f3).reshape(h3, w3, -1)  # [h3, w3, C*9]
    # Each of the C*9 channels of layer3 is resized to the layer2 grid, bilinearly.
    u3 = F.interpolate(torch.from_numpy(u3).permute(2, 0, 1)[None], size=f2.shape[1:], mode="bilinear",
                       align_corners=False)[0].permute(1, 2, 0).reshape(-1, c3 * 9).numpy()
    stacked = np.concatenate([_bins(u2, 4096), _bins(u3, 4096)], axis=1)
    return _bins(stacked, 1024).astype(np.float32), f2.shape[1:]


def _write_model(folder, vectors, params=PARAMS):
    folder.mkdir(parents=True, exist_ok=True)
    write_params(folder / PARAMS_FILE, params)
    write_flat_index(folder / INDEX_FILE, vectors)


def test_original_files_give_the_original_scores(tmp_path, weights):
    rng = np.random.default_rng(0)
    train = rng.integers(60, 200, (2, 128, 167), dtype=np.uint8)
    test = train.copy()
    test[0, 40:60, 50:54] = 10  # a dark defect
    test[1] = rng.integers(60, 200, (128, 167), dtype=np.uint8)
    net = _reference_net(weights)
    bank = np.concatenate([_reference_embed(net, c)[0] for c in train])
    _write_model(tmp_path / "model", bank)

    model = OriginalPatchCore(tmp_path / "model", weights_path=str(weights))
    result = model.score(test)
    masks = model.original_masks(test)
    index = faiss.IndexFlatL2(1024)
    index.add(bank)
    for i, crop in enumerate(test):
        feats, (gh, gw) = _reference_embed(net, crop)
        dist = index.search(feats, 1)[0][:, 0]
        np.testing.assert_allclose(result.scores[i], dist.max(), rtol=1e-3)
        ref_mask = F.interpolate(torch.from_numpy(dist.reshape(1, 1, gh, gw)), size=(167, 128), mode="bilinear",
                                 align_corners=False)[0, 0].numpy()
        ref_mask = scipy.ndimage.gaussian_filter(ref_mask, sigma=4)
        np.testing.assert_allclose(masks[i], ref_mask, rtol=1e-3, atol=1e-3 * ref_mask.max())
    assert result.scores[0] > 0 and result.maps.shape == (2, 128, 167)
    # The defect is where the map peaks.
    y, x = np.unravel_index(result.maps[0].argmax(), result.maps[0].shape)
    assert 30 <= y <= 70 and 40 <= x <= 64


def test_batch_norm_update_matches_the_documented_momentum(weights, tmp_path):
    _write_model(tmp_path / "m", np.zeros((336, 1024), np.float32))
    model = OriginalPatchCore(tmp_path / "m", weights_path=str(weights))
    fresh = torchvision.models.resnet50(weights=None)
    fresh.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        batch = fresh.conv1(torch.ones(1, 3, 167, 128))
    expected_mean = 0.9 * fresh.bn1.running_mean + 0.1 * batch.mean((0, 2, 3))
    expected_var = 0.9 * fresh.bn1.running_var + 0.1 * batch.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(model.net.bn1.running_mean, expected_mean)
    torch.testing.assert_close(model.net.bn1.running_var, expected_var)
    assert not model.net.training
    # layer4 is neither loaded (the features stop at layer3) nor reached by the original's forward.
    bn = model.net.layer4[0].bn1
    assert not bn.running_mean.any() and (bn.running_var == 1).all()
    assert not torch.equal(bn.running_mean, fresh.layer4[0].bn1.running_mean)


def test_flat_index_round_trip_and_layout(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(672, 1024)).astype(np.float32)
    write_flat_index(tmp_path / INDEX_FILE, vectors)
    data = (tmp_path / INDEX_FILE).read_bytes()
    assert data[:4] == b"IxF2" and len(data) == 45 + 4 * vectors.size
    np.testing.assert_array_equal(read_flat_index(tmp_path / INDEX_FILE), vectors)


def test_other_index_types_and_broken_files_are_refused(tmp_path):
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(8), 8, 2)
    ivf.train(np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32))
    faiss.write_index(ivf, str(tmp_path / "ivf.faiss"))
    with pytest.raises(UnsafeModelFile, match="not a flat L2 index"):
        read_flat_index(tmp_path / "ivf.faiss")
    write_flat_index(tmp_path / "cut.faiss", np.zeros((10, 8), np.float32))
    (tmp_path / "cut.faiss").write_bytes((tmp_path / "cut.faiss").read_bytes()[:-4])
    with pytest.raises(UnsafeModelFile, match="inconsistent header"):
        read_flat_index(tmp_path / "cut.faiss")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/anodect-pwned",))


def test_a_pickle_that_imports_anything_is_refused(tmp_path):
    evil = tmp_path / PARAMS_FILE
    evil.write_bytes(pickle.dumps({"backbone.name": "resnet50", "x": _Exploit()}, protocol=5))
    with pytest.raises(UnsafeModelFile, match=r"refused: the pickle asks to import (posix|os)\.system"):
        load_params(evil)
    assert not os.path.exists("/tmp/anodect-pwned")
    harmless_class = tmp_path / "p2.pkl"
    harmless_class.write_bytes(pickle.dumps({"when": __import__("datetime").date(2024, 1, 1)}, protocol=5))
    with pytest.raises(UnsafeModelFile, match="datetime.date"):
        load_params(harmless_class)


def test_plain_params_load_with_their_values(tmp_path):
    write_params(tmp_path / PARAMS_FILE, PARAMS)
    assert load_params(tmp_path / PARAMS_FILE) == PARAMS
    (tmp_path / "short.pkl").write_bytes(pickle.dumps({"backbone.name": "resnet50"}, protocol=5))
    with pytest.raises(UnsafeModelFile, match="missing keys"):
        load_params(tmp_path / "short.pkl")


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _write_model(tmp_path / "m", np.zeros((336, 1024), np.float32))
    with pytest.raises(FileNotFoundError, match=r"resnet50-0676ba61\.pth.*torch/hub/checkpoints"):
        OriginalPatchCore(tmp_path / "m")


def test_the_original_model_takes_a_resnet50_file_without_its_head(tmp_path, imgsim_resnet50):
    """Real ResNet-50 weights as users keep them (wrapper prefix, another head): the original's
    model loads them (the head and layer4 are not used) and scores."""
    rng = np.random.default_rng(1)
    _write_model(tmp_path / "model", rng.normal(0, 1, (50, 1024)).astype(np.float32))
    model = OriginalPatchCore(tmp_path / "model", weights_path=imgsim_resnet50)
    result = model.score(rng.integers(60, 200, (2, 128, 167), dtype=np.uint8))
    assert result.scores.shape == (2,) and np.isfinite(result.scores).all()
