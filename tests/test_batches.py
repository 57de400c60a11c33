"""Batches of scans per job: every scan in one batch of its role, and batches that stay put."""

import re

import pytest

from anodect.batches import BATCH_PATTERN, assign, bucket, members, n_batches, scan_context


def sheet(n, role="inspect", start=0):
    return [{"scan_id": f"cell_{i:05d}-{i:08x}", "role": role} for i in range(start, start + n)]


def groups(rows, per_job):
    return {b: {r["scan_id"] for r in scans} for b, scans in members(rows, per_job).items()}


def test_every_scan_has_one_batch_of_its_own_role_and_the_count_follows_scans_per_job():
    rows = sheet(95) + sheet(7, "train_normal", 1000) + sheet(1, "train_defect", 2000)
    batch_of = assign(rows, 10)
    assert set(batch_of) == {r["scan_id"] for r in rows}
    for r in rows:
        assert batch_of[r["scan_id"]].startswith(r["role"] + "-")
        assert re.fullmatch(BATCH_PATTERN, batch_of[r["scan_id"]])
    assert len({b for b in batch_of.values() if b.startswith("inspect")}) == n_batches(95, 10) == 10
    assert {b for b in batch_of.values() if not b.startswith("inspect")} == {"train_normal-0000",
                                                                             "train_defect-0000"}


def test_one_scan_per_job_names_each_batch_after_its_scan():
    rows = sheet(5)
    assert assign(rows, 1) == {r["scan_id"]: r["scan_id"] for r in rows}
    assert not any(re.fullmatch(BATCH_PATTERN, r["scan_id"]) for r in rows)


def test_members_lists_batches_sorted_and_scans_in_sheet_order():
    rows = sheet(40)
    got = members(rows, 8)
    assert list(got) == sorted(got)
    order = [r["scan_id"] for r in rows]
    for scans in got.values():
        ids = [r["scan_id"] for r in scans]
        assert ids == sorted(ids, key=order.index)
    assert sum(len(v) for v in got.values()) == 40


def test_a_new_scan_changes_its_own_batch_and_at_most_one_split():
    """Linear hashing: a scan that joins changes its own batch; when it raises the number of batches,
    one batch is also split in two (it and the new batch change). Every other batch keeps exactly
    its scans, and so its results."""
    rows = sheet(1)
    before = groups(rows, 10)
    splits = 0
    for i in range(1, 400):
        rows = rows + sheet(1, start=i)
        after = groups(rows, 10)
        changed = {b for b in before if after.get(b) != before[b]}
        new = after.keys() - before.keys()
        assert len(changed) <= 2 and len(new) <= 1 and len(changed) + len(new) <= 3, (i, changed, new)
        assert len(changed) <= 1 or new, (i, changed)  # two old batches change only with a split
        splits += len(new)
        before = after
    assert splits == n_batches(400, 10) - 1  # the batches grew one at a time


def test_batch_sizes_stay_near_scans_per_job():
    sizes = [len(v) for v in members(sheet(5000), 20).values()]
    assert len(sizes) == 250 and sum(sizes) == 5000
    assert max(sizes) <= 3 * 20 and min(sizes) >= 1


def test_bucket_is_within_range_and_deterministic():
    for n in (1, 2, 3, 7, 64, 65, 100):
        assert all(0 <= bucket(f"s{i}", n) < n for i in range(200))
    # Pinned: the batch of a scan must not change between processes, machines or Python versions
    # (Python's own hash() is salted per process), or every rerun would redo every batch.
    assert bucket("cell-0000abcd", 37) == 13
    assert [bucket(f"cell_{i:05d}-{i:08x}", 10) for i in range(8)] == [3, 2, 9, 9, 4, 1, 6, 4]


def test_scans_per_job_below_one_is_refused():
    with pytest.raises(ValueError, match="scans_per_job"):
        assign(sheet(3), 0)


def test_an_error_inside_a_batch_job_names_its_scan_and_keeps_its_type():
    import traceback

    with pytest.raises(OSError) as info:
        with scan_context("t01_z-3fd149d7"):
            raise OSError("cannot read slice_0204.tif: truncated file")
    text = "".join(traceback.format_exception(info.value))
    assert "truncated file" in text and "while processing scan t01_z-3fd149d7" in text
