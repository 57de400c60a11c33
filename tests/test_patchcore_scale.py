"""Issue #27: a coreset and a search that scale with the training set."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from anodect.patchcore.coreset import coreset, greedy_coreset
from anodect.patchcore.search import NearestNeighbourIndex, SearchSettings


def _clusters(n=6000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(30, d))
    return (centres[rng.integers(0, 30, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_up_to_its_picks_per_block_the_coreset_is_the_exact_greedy_selection():
    x = _clusters()
    np.testing.assert_array_equal(coreset(x, 0.05, seed=2, block_picks=300), greedy_coreset(x, 0.05, seed=2))
    np.testing.assert_array_equal(coreset(x, 0.05, seed=2, block_picks=0), greedy_coreset(x, 0.05, seed=2))
    assert not np.array_equal(np.sort(coreset(x, 0.05, seed=2, block_picks=299)),
                              np.sort(greedy_coreset(x, 0.05, seed=2)))


def test_the_blocked_coreset_is_deterministic_and_the_same_size():
    x = _clusters()
    a = coreset(x, 0.05, seed=3, block_picks=50)
    np.testing.assert_array_equal(a, coreset(x, 0.05, seed=3, block_picks=50))
    assert len(np.unique(a)) == len(a) and abs(len(a) - 0.05 * len(x)) <= 6  # one rounding per block
    assert not np.array_equal(np.sort(a), np.sort(coreset(x, 0.05, seed=4, block_picks=50)))


def test_the_blocked_coreset_keeps_a_rare_patch_and_covers_as_the_exact_one_does():
    x = _clusters()
    rare = np.full((3, x.shape[1]), 40.0, np.float32)  # three patches far from everything
    x = np.concatenate([x, rare])
    blocked = coreset(x, 0.05, seed=0, block_picks=50)
    assert np.isin(np.arange(len(x) - 3, len(x)), blocked).any()
    exact = greedy_coreset(x, 0.05, seed=0)

    def radius(picked):
        return float(np.sqrt(NearestNeighbourIndex(x[picked]).search(x)).max())

    # Each block is covered within its own greedy radius: about the exact one.
    assert radius(blocked) <= 1.5 * radius(exact)


def test_the_blocked_coreset_needs_no_copy_of_the_patches():
    """2 M patches x 24 (192 MB): the selection's peak memory above the patches stays small."""
    code = textwrap.dedent("""
        import resource, sys
        import numpy as np
        sys.path.insert(0, "src")
        from anodect.patchcore.coreset import coreset
        x = np.random.default_rng(0).normal(size=(2_000_000, 24)).astype(np.float32)
        coreset(x[:20000], 0.002, block_picks=32)  # torch's own buffers allocated before the baseline
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        picked = coreset(x, 0.002, block_picks=32)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(picked), (after - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    n, grew_mb = out.stdout.split()
    assert int(n) == pytest.approx(4000, abs=130)
    assert float(grew_mb) < 64, f"peak memory grew by {grew_mb} MB (the patches are 192 MB)"


def test_approximate_search_finds_the_nearest_bank_vector_and_leaves_rows_out():
    bank = _clusters(20000, seed=1)
    queries = _clusters(2000, seed=2)
    exact = NearestNeighbourIndex(bank)
    # Gaussian clusters in 24 dimensions are harder than patch features: more lists probed.
    approx = NearestNeighbourIndex(bank, settings=SearchSettings(index="approximate", nprobe=64))
    assert approx.approximate and not exact.approximate
    assert approx.recall_at_1(queries) >= 0.99
    assert (approx.search(queries) >= exact.search(queries) * (1 - 1e-5) - 1e-5).all()  # never nearer than exact
    # Held-out scoring: a bank vector left out is not its own neighbour; the answer is the exact
    # nearest among the others.
    left = np.arange(0, 20000, 2)
    got = approx.without(left).search(bank[left[:500]])
    want = exact.without(left).search(bank[left[:500]])
    assert (got > 0).all()
    assert np.mean(np.isclose(got, want, rtol=1e-4, atol=1e-4)) >= 0.99


def test_auto_search_is_exact_up_to_its_switch_over():
    bank = _clusters(3000)
    assert not NearestNeighbourIndex(bank, settings=SearchSettings(approximate_above=3000)).approximate
    assert NearestNeighbourIndex(bank, settings=SearchSettings(approximate_above=2999)).approximate


def test_a_saved_model_keeps_its_search_and_an_older_one_searches_exactly(tmp_path):
    import json

    from anodect.patchcore.model import PatchCore, PatchCoreSettings

    crops = np.random.default_rng(0).integers(0, 255, size=(12, 64, 64), dtype=np.uint8)
    settings = PatchCoreSettings(coreset_fraction=0.5, search=SearchSettings(index="approximate", nprobe=4))
    model = PatchCore(settings).fit(crops[:8], context=0)
    assert model.index.approximate and model.metadata["search"]["index"] == "approximate"
    assert 0 <= model.metadata["search"]["recall_at_1"] <= 1
    model.save(tmp_path / "m")
    loaded = PatchCore.load(tmp_path / "m")
    assert loaded.index.approximate and loaded.index.index.nprobe == 4
    np.testing.assert_array_equal(loaded.score(crops[8:]).scores, model.score(crops[8:]).scores)
    # A model.json from before issue #27: no search, no blocked coreset.
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    for key in ("search", "coreset", "coreset_block_picks"):
        meta.pop(key)
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    old = PatchCore.load(tmp_path / "m")
    assert not old.index.approximate and old.settings.coreset_block_picks == 0


def test_above_its_limit_held_out_scoring_takes_one_run_of_slices_per_cell():
    from anodect.patchcore.model import heldout_runs
    from anodect.patchcore.volume import VolumeSettings

    vol = VolumeSettings(slab=3, window=3, reference_slices=41)
    assert heldout_runs([300, 200], [2, 2], 2000, vol, 0) == [(0, 300, slice(None)), (0, 200, slice(None))]
    assert heldout_runs([300, 200], [2, 2], 0, vol, 0) == [(0, 300, slice(None)), (0, 200, slice(None))]
    runs = heldout_runs([300] * 10, [2] * 10, 2000, vol, 0)
    assert runs == heldout_runs([300] * 10, [2] * 10, 2000, vol, 0)  # seeded
    kept = [len(range(300)[lo:hi][k]) for lo, hi, k in runs]
    assert kept == [100] * 10 and sum(kept) * 2 == 2000  # the same share of every cell
    for lo, hi, k in runs:
        inner = range(lo, hi)[k]
        # two slices of context (slab 3, window 3) on each side, except at the scan's ends
        assert inner.start - lo == min(2, inner.start) and hi - inner.stop == min(2, 300 - inner.stop)
    assert len({lo for lo, _, _ in runs}) > 1  # not always the same slices
    # A short cell keeps enough slices for its volume statistics.
    (lo, hi, k), = heldout_runs([60], [2], 20, vol, 0)
    assert len(range(lo, hi)[k]) == 41
    # Many short cells (the benchmark's 115 demo cells of 26 slices): a seeded subset of whole cells.
    runs = heldout_runs([26] * 115, [2] * 115, 2000, vol, 0)
    scored = [hi - lo for lo, hi, _ in runs]
    assert set(scored) == {0, 26} and 2000 <= sum(scored) * 2 < 2000 + 52
