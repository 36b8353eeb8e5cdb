"""Tests of mtbc_lib.dedup.tables: the group and lesion tables, duplicates.csv (same-scan
groups, then images that share only their lesion), the written files, the summary lines."""

from __future__ import annotations

from mtbc_lib import dedup
from mtbc_lib.data.busi import read_keep_list

# ----------------------------------------------------------------------------- files

def test_duplicates_csv_holds_lesion_only_images(lesions, tmp_path):
    import pandas as pd

    _, r = lesions
    paths = dedup.write_audit(r, tmp_path / "out")
    dup = pd.read_csv(paths["duplicates"], dtype={"group": "Int64", "lesion_group": "Int64"})
    assert list(dup.columns) == dedup.DUPLICATE_COLUMNS
    assert dup[["class", "id", "group", "lesion_group"]].astype(object).values.tolist() == [
        ["benign", 2, 1, 1], ["benign", 3, 1, 1], ["benign", 1, pd.NA, 1]]
    assert dup["size"].tolist() == [2, 2, 1]
    # curation is unchanged: only the copies are dropped
    assert r.keep("drop-all") == {(c, int(i)) for c, i in zip(r.index["class"], r.index["id"])} - {
        ("benign", 2), ("benign", 3)}
    pairs = pd.read_csv(paths["pairs"])
    assert {"lesion_ssim", "same_lesion", "lesion_group"} <= set(pairs.columns)


def test_write_audit_files(synthetic, tmp_path):
    _, r = synthetic
    paths = dedup.write_audit(r, tmp_path / "out", curation="keep-one")
    import pandas as pd

    dup = pd.read_csv(paths["duplicates"])
    assert list(dup.columns) == dedup.DUPLICATE_COLUMNS
    assert list(dup["file"])[:2] == ["benign/benign (1).png", "benign/benign (2).png"]
    assert read_keep_list(paths["curated"]) == r.keep("keep-one")
    assert paths["curated"].read_bytes().startswith(b"class;id\r\nbenign;3\r\n")
    assert len(pd.read_csv(paths["pairs"])) == len(r.pairs)
    assert not list((tmp_path / "out").glob("*.tmp"))
