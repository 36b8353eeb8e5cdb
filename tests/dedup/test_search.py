"""Tests of mtbc_lib.dedup.search: the search on small generated scans (a crop, a
rescale, a crop + rescale of one synthetic scan are found, unrelated scans are not),
label conflicts, mask agreement, the curation rules, bad input. Real-data checks (the
paper's groups) behind @pytest.mark.data. The caches' tests are in test_cache.py, the
output files' in test_tables.py; the shared fixtures in conftest.py."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import write_synthetic_busi

from mtbc_lib import dedup
from mtbc_lib.data.busi import DataError, read_keep_list
from mtbc_lib.report import audit


def _members(result) -> list[set[str]]:
    names = result.index["name"]
    return [set(names[g["row"]]) for _, g in result.groups.groupby("group")]


# ----------------------------------------------------------------------------- search

def test_crops_and_rescales_found_unrelated_scans_not(synthetic):
    _, r = synthetic
    assert _members(r) == [{"benign (1)", "benign (2)", "malignant (1)", "malignant (2)"},
                           {"normal (3)", "normal (4)"}]
    assert r.group_sizes() == {2: 1, 4: 1}
    grouped = set(r.groups["row"])
    others = r.pairs[~r.pairs["i"].isin(grouped) | ~r.pairs["j"].isin(grouped)]
    assert not others["duplicate"].any() and others["score"].max() < 0.5
    # the crop + rescale is aligned: scale 1/0.8 between malignant 2 and the scan (benign 1)
    p = r.pairs[(r.pairs["name_i"] == "benign (1)") & (r.pairs["name_j"] == "malignant (2)")].iloc[0]
    assert p["aligned_ssim"] > 0.98 > 0.5 > p["plain_ssim"]
    assert p["sy"] == pytest.approx(160 / 128, rel=0.01) and p["sx"] == pytest.approx(125 / 100, rel=0.01)


def test_whole_image_ssim_alone_misses_the_crops(synthetic):
    root, _ = synthetic
    r = dedup.find_groups(root, dedup.DedupConfig(extended=False), progress=False, workers=1)
    assert _members(r) == [{"benign (1)", "malignant (1)"}]  # only the whole-image rescale
    assert set(r.groups["method"]) == {"whole-image"} and set(r.groups["linked_by"]) == {"whole-image"}


def test_methods_label_conflicts_and_mask_agreement(synthetic):
    _, r = synthetic
    g = r.groups.set_index(r.index["name"][r.groups["row"]].to_numpy())
    assert g.loc["benign (1)", "label_conflict"] and g.loc["benign (1)", "classes"] == "benign+malignant"
    assert not g.loc["normal (3)", "label_conflict"]
    assert set(g["method"]) == {"extended"}  # both groups need the alignment
    assert g.loc["malignant (1)", "linked_by"] == "whole-image" and g.loc["benign (2)", "linked_by"] == "extended"
    inside = r.pairs[r.pairs["group"] == 1]
    assert len(inside) == 6 and inside["mask_iou"].min() > 0.9  # the same lesion, aligned
    assert r.pairs.loc[r.pairs["group"] == 2, "mask_iou"].tolist() == [1.0]  # two empty masks agree


def test_frames_of_one_lesion_grouped_other_lesions_and_labels_not(lesions):
    _, r = lesions
    assert _members(r) == [{"benign (2)", "benign (3)"}]  # the only copy
    names = r.index["name"]
    les = [set(names[g["row"]]) for _, g in r.lesions.groupby("lesion_group")]
    assert les == [{"benign (1)", "benign (2)", "benign (3)"}]
    p = r.pairs.set_index(["name_i", "name_j"])
    frame = p.loc[("benign (1)", "benign (2)")]
    # another frame: not a copy (aligned SSIM well below 0.94), but the same lesion
    assert frame["score"] < 0.9 and frame["lesion_ssim"] > 0.9 and frame["same_lesion"]
    other_label = p.loc[("benign (1)", "malignant (1)")]
    assert other_label["lesion_ssim"] > 0.9 and not other_label["same_lesion"] and other_label["lesion_group"] == -1
    others = r.pairs[~r.pairs["name_i"].isin(["benign (1)", "benign (2)", "benign (3)", "malignant (1)"])]
    assert others["lesion_ssim"].max() < 0.6 and not others["same_lesion"].any()
    # the copy's pair is inside one same-scan group: no lesion score, lesion group shared
    copy = p.loc[("benign (2)", "benign (3)")]
    assert np.isnan(copy["lesion_ssim"]) and not copy["same_lesion"] and copy["lesion_group"] == 1
    assert r.groups["lesion_group"].tolist() == [1, 1]
    assert r.counts["lesion_groups"] == 1 and r.counts["images_in_lesion_groups"] == 3
    assert "1 lesion groups holding 3 images; 1 of them in no same-scan group (1 benign)" in dedup.summary(r)


def test_lesion_search_off_and_bad_settings(lesions):
    root, _ = lesions
    r = dedup.find_groups(root, dedup.DedupConfig(lesion=False), progress=False, workers=1)
    assert r.pairs["lesion_ssim"].isna().all() and not r.pairs["same_lesion"].any()
    # without lesion edges, the lesion groups are the same-scan groups
    assert r.lesions[["class", "id"]].values.tolist() == r.groups[["class", "id"]].values.tolist()
    assert "same lesion" not in dedup.summary(r)
    with pytest.raises(ValueError, match="lesion_threshold=1.5"):
        dedup.DedupConfig(lesion_threshold=1.5)
    with pytest.raises(ValueError, match="lesion_size=4"):
        dedup.DedupConfig(lesion_size=4)


def test_curation_rules(synthetic):
    _, r = synthetic
    everyone = {(c, int(i)) for c, i in zip(r.index["class"], r.index["id"])}
    outside = {("benign", 3), ("malignant", 3), ("normal", 1), ("normal", 2)}
    assert r.keep("drop-all") == outside
    # keep-one: the conflicting group goes entirely, the agreeing one keeps its largest image
    assert r.keep("keep-one") == outside | {("normal", 3)}
    assert len(everyone) == 10
    with pytest.raises(ValueError, match="keep-one"):
        r.keep("keep-all")


def test_the_audit_imports_no_scipy(synthetic_lesions, tmp_path):
    """Every audit stage (both levels; one process, so the workers' imports count too)
    runs without scipy, whose import would cost a cold run about 0.3 s before the workers
    start."""
    import subprocess
    import sys

    code = ("import sys; from mtbc_lib import cli; cli.main(['audit', sys.argv[1], '--out', sys.argv[2], '--workers', '1', '--quiet']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'skimage', 'sklearn', 'torch'}))")
    run = subprocess.run([sys.executable, "-c", code, str(synthetic_lesions), str(tmp_path / "out")],
                         capture_output=True, text=True, env={**__import__("os").environ, "MTBC_CACHE": str(tmp_path / "c")})
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "pairs.csv").exists() and run.stdout.strip().endswith("[]")


def test_bad_input_raises_one_line_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        dedup.find_groups(tmp_path / "missing", progress=False, workers=1)
    root = write_synthetic_busi(tmp_path / "BUSI")
    (root / "benign" / "benign (2).png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"benign \(2\)\.png.*cannot be decoded") as exc:
        dedup.find_groups(root, progress=False, workers=2)
    assert "\n" not in str(exc.value)



def test_notebook_params_reject_unknown_names():
    folder, cfg, rule = dedup.params_from_namespace({"threshold": 0.9, "size": 48, "curation": "keep-one",
                                                     "data_dir": "", "np": np})
    assert cfg.threshold == 0.9 and cfg.size == 48 and rule == "keep-one" and folder.is_dir()
    with pytest.raises(ValueError, match="unknown parameter treshold"):
        dedup.params_from_namespace({"treshold": 0.9})
    with pytest.raises(ValueError, match="curation"):
        dedup.params_from_namespace({"curation": "all"})


# ----------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def busi_audit():
    from mtbc_lib import core

    try:
        root = core.data_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"real BUSI data absent: {exc}")
    return dedup.find_groups(root, progress=False)


def _key_name(c, i):
    return f"{c} ({i})"


@pytest.mark.data
@pytest.mark.slow
def test_busi_reproduces_the_published_groups(busi_audit):
    """The published removal set is exactly 5 quadruplets, 22 triplets and 122 duplets
    of our groups; we find one duplet more (malignant 11 / 113, a crop + rescale)."""
    from mtbc_lib.data.busi import PUBLISHED_KEEP_LIST

    r = busi_audit
    published = read_keep_list(PUBLISHED_KEEP_LIST)
    assert len(published) == 450
    sizes_in_published = {}
    for _, g in r.groups.groupby("group"):
        removed = [(c, int(i)) not in published for c, i in zip(g["class"], g["id"])]
        assert all(removed) or not any(removed), "a group split by the published list"
        if all(removed):
            sizes_in_published[len(g)] = sizes_in_published.get(len(g), 0) + 1
    assert sizes_in_published == {2: 122, 3: 22, 4: 5}
    assert r.group_sizes() == {2: 123, 3: 22, 4: 5}
    assert published - r.keep("drop-all") == {("malignant", 11), ("malignant", 113)}
    assert r.keep("drop-all") <= published
    diff = audit.compare_published(r)
    assert set(diff["name"]) == {"malignant (11)", "malignant (113)"} and set(diff["ours"]) == {"removed"}


@pytest.mark.data
@pytest.mark.slow
def test_busi_threshold_margin_and_conflicts(busi_audit):
    r = busi_audit
    dup = r.pairs[r.pairs["duplicate"]]
    # a wide gap: same-scan pairs score >= 0.96, the closest different frames <= 0.92
    assert dup["score"].min() > 0.96 and r.pairs.loc[~r.pairs["duplicate"], "score"].max() < 0.92
    # the paper's example: one scan stored as benign 42, benign 131 and malignant 51
    g = r.groups[r.groups["row"].isin(r.index.index[r.index["name"].isin(["benign (42)", "benign (131)",
                                                                            "malignant (51)"])])]
    assert g["group"].nunique() == 1 and g["size"].iloc[0] == 3 and g["label_conflict"].all()
    # whole-image SSIM alone connects only part of the groups
    methods = r.groups.drop_duplicates("group")["method"].value_counts()
    assert methods["whole-image"] + methods["extended"] == 150 and methods["extended"] > 50
    assert len(r.keep("keep-one")) == 780 - len(r.groups) + int(r.groups["keep_one"].sum())


@pytest.mark.data
@pytest.mark.slow
def test_busi_lesion_groups(busi_audit):
    """Every same-scan group lies in one lesion group; frames of one lesion are linked
    (benign 125 / 126, malignant 3 with the copies malignant 4-9), different lesions are not
    (malignant 32 / 168: two spiculated masses, the highest same-class pair below the
    threshold); the curation is untouched."""
    r = busi_audit
    les = r.lesions.set_index("row")
    assert (r.groups.groupby("group")["lesion_group"].nunique() == 1).all()
    assert (les.loc[r.groups["row"], "lesion_group"].to_numpy() == r.groups["lesion_group"].to_numpy()).all()
    names = dict(zip(r.index["name"], r.index.index))

    def lesion(name):
        return les.at[names[name], "lesion_group"] if names[name] in les.index else -1

    assert lesion("benign (125)") == lesion("benign (126)") > 0
    assert lesion("malignant (3)") == lesion("malignant (4)") == lesion("malignant (9)") > 0
    assert lesion("malignant (32)") != lesion("malignant (168)") or lesion("malignant (32)") == -1
    edges = r.pairs[r.pairs["same_lesion"]]
    assert (r.index.loc[edges["i"], "class"].to_numpy() == r.index.loc[edges["j"], "class"].to_numpy()).all()
    assert edges["lesion_ssim"].min() >= r.config.lesion_threshold > r.pairs.loc[
        ~r.pairs["same_lesion"] & ~r.pairs["duplicate"], "lesion_ssim"].max() - 0.02
    assert len(r.keep("drop-all")) == 448


def test_cli_lesion_options(lesions, tmp_path, capsys):
    import pandas as pd

    from mtbc_lib import cli

    root, _ = lesions
    assert cli.main(["audit", str(root), "--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    assert "1 lesion groups holding 3 images" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "a" / "duplicates.csv")["lesion_group"].tolist() == [1, 1, 1]
    assert cli.main(["audit", str(root), "--out", str(tmp_path / "b"), "--workers", "1", "--quiet", "--no-lesion"]) == 0
    assert len(pd.read_csv(tmp_path / "b" / "duplicates.csv")) == 2  # the copies only
    with pytest.raises(SystemExit) as exc:
        cli.main(["audit", str(root), "--out", str(tmp_path / "c"), "--lesion-threshold", "2"])
    assert exc.value.code == 2 and "--lesion-threshold: 2 is not an SSIM value" in capsys.readouterr().err


def test_a_folder_without_copies_has_no_groups_and_keeps_every_image(tmp_path, monkeypatch):
    """Noise images: no copies, and (the flat ramp of the last image) one without keypoints."""
    from conftest import write_png
    from helpers import write_noise_busi

    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))
    root = write_noise_busi(tmp_path / "BUSI", n_per_class=3)
    write_png(root / "normal" / "normal (3).png", np.full((64, 64), 90, np.uint8), "L")
    r = dedup.find_groups(root, progress=False, workers=1)
    assert r.counts["groups"] == 0 and r.groups.empty and len(r.keep("drop-all")) == len(r.index) == 9
    assert dedup.audit_groups(root, "scan") == {}
