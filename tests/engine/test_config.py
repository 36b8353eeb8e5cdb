"""mtbc_lib.engine.config: profiles, run names, one-line errors for bad parameters, folds,
notebook parameters and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from mtbc_lib.engine import config


def test_profiles_fill_unset_fields_and_given_values_win():
    paper = config.TrainConfig().resolve()
    assert (paper.epochs, paper.patience, paper.batch_size, paper.lr) == (200, 50, 2, 1e-4)
    assert (paper.plateau_factor, paper.plateau_patience, paper.min_lr, paper.amp) == (0.5, 20, 1e-6, "off")
    assert paper.seed == 1993 and paper.lam == 0.35 and paper.folds == [0, 1, 2, 3]
    fast = config.TrainConfig(profile="fast", epochs=7).resolve()
    assert fast.epochs == 7 and fast.batch_size == config.PROFILES["fast"]["batch_size"]
    assert (paper.image_size, paper.width, fast.image_size, fast.width) == (128, 1.0, 128, 1.0)


def test_replica_is_the_paper_protocol_at_a_smaller_scale():
    paper, replica = (config.TrainConfig(profile=p).resolve() for p in ("paper", "replica"))
    protocol = ("epochs", "patience", "batch_size", "lr", "plateau_factor", "plateau_patience", "min_lr",
                *config.PAPER_RECIPE)
    assert all(getattr(paper, k) == getattr(replica, k) for k in protocol)
    assert (replica.image_size, replica.width) == (64, 0.5)
    assert replica.run_name == "unetplusplus-mt-replica"
    assert config.TrainConfig(profile="replica", width=0.25).resolve().run_name == "unetplusplus-mt-replica-width0.25"
    assert config.TrainConfig(image_size=64).resolve().run_name == "unetplusplus-mt-paper-imagesize64"
    # a run written before the field existed used the paper's widths
    old = config.TrainConfig().resolve().to_dict()
    del old["width"]
    assert config.config_diff(old, config.TrainConfig().resolve().to_dict()) == []


def test_run_name_derivation():
    assert config.TrainConfig(oversampling=True).resolve().run_name == "unetplusplus-mt-do-paper"
    assert config.TrainConfig(task="seg", curation="none", profile="fast").resolve().run_name == \
        "unetplusplus-st-seg-fast-curationnone"
    assert config.TrainConfig(lam=0.5, limit=5).resolve().run_name == "unetplusplus-mt-paper-lam0.5-limit5"
    # deep supervision is named only where it differs from the backbone's default
    assert config.TrainConfig(deep_supervision=False).resolve().run_name == "unetplusplus-mt-paper-ds0"
    assert config.TrainConfig(backbone="nnunet-planned", task="cls", profile="fast").resolve().run_name == \
        "nnunet-planned-st-cls-fast"
    assert config.TrainConfig().resolve().deep_supervision is True
    assert config.TrainConfig(backbone="unet-r34").resolve().deep_supervision is False
    assert config.TrainConfig(run_name="mine").resolve().run_name == "mine"


@pytest.mark.parametrize("kw, message", [
    (dict(task="segm"), "parameter task='segm': expected one of seg, cls, mt"),
    (dict(backbone="resnet"), "parameter backbone='resnet': expected one of unetplusplus"),
    (dict(curation="strict"), "expected one of paper, keep-one, none"),
    (dict(profile="slow"), "expected one of paper, fast, steady, gpu"),
    (dict(folds=[4]), "fold numbers in 0..3"),
    (dict(epochs="ten"), "parameter epochs='ten': expected an int or None"),
    (dict(oversampling="yes"), "expected a bool"),
    (dict(lam=1.5), "expected a weight in [0, 1]"),
    (dict(amp="maybe"), "expected one of auto, on, off"),
    (dict(image_size=100), "multiple of 32"),
    (dict(width=0), "parameter width=0: expected a factor in (0, 4]"),
    (dict(backbone="unet-r34", width=0.5), "only the paper's networks scale their widths (unetplusplus, nnunet"),
    (dict(backbone="unet-r34", deep_supervision=True), "a backbone out of unetplusplus, nnunet, nnunet-planned"),
])
def test_bad_values_fail_with_one_line(kw, message):
    with pytest.raises(ValueError) as e:
        config.TrainConfig(**kw).resolve()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_folds_accept_int_string_and_list():
    assert config.TrainConfig(folds=2).resolve().folds == [2]
    assert config.TrainConfig(folds="3,1").resolve().folds == [1, 3]
    assert config.TrainConfig(folds=[]).resolve().folds == [0, 1, 2, 3]


def test_config_from_namespace_rejects_undeclared_names():
    import os

    ns = {"task": "seg", "epochs": 3, "config": config, "os": os, "_private": 1, "In": [], "Out": {},
          "__name__": "__main__", "get_ipython": print}
    cfg = config.config_from_namespace(ns)
    assert cfg.task == "seg" and cfg.epochs == 3
    with pytest.raises(ValueError) as e:
        config.config_from_namespace(ns | {"bogus": 1, "epoch": 5})
    msg = str(e.value)
    assert msg.startswith("unknown parameters bogus, epoch; valid: backbone, task,") and "\n" not in msg


def test_config_roundtrips_through_json():
    cfg = config.TrainConfig(profile="fast", folds=[1]).resolve()
    again = config.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
