"""Curation: which BUSI images a run uses.

A curation is a name in :data:`CURATIONS` — ``paper``: the published Curated BUSI keep-list
(450 images, shipped in ``mtbc_lib/resources``); ``keep-one``: our duplicate audit
(:mod:`mtbc_lib.dedup`) keeping one image of each group of copies; ``none``: raw BUSI, all
780 — or a path to a keep-list file in the published ``class;id`` format
(:func:`mtbc_lib.data.read_keep_list`). :func:`curate` applies it to decoded arrays.
"""

from __future__ import annotations

import os

import numpy as np

from mtbc_lib.data import PUBLISHED_KEEP_LIST, BusiArrays, DataError, read_keep_list

__all__ = ["CURATIONS", "curate"]


def _keep_paper(data_dir):
    return read_keep_list(PUBLISHED_KEEP_LIST)


def _keep_one(data_dir):
    from mtbc_lib import dedup  # lazy: only this rule needs the audit

    return dedup.keep_list(data_dir, "keep-one")


#: Curation rule -> function(data_dir) giving the keep set (None = keep everything).
CURATIONS = {
    "paper": _keep_paper,      # the published Curated BUSI v1 list (450 images)
    "keep-one": _keep_one,     # our duplicate search, one representative per group
    "none": None,              # raw BUSI, all 780 images
}


def curate(arrays: BusiArrays, curation="paper", data_dir=None) -> BusiArrays:
    """The images of ``arrays`` kept by a curation rule (a name in ``CURATIONS``, or a
    Path to a ``class;id`` keep-list file). Every listed image must be in ``arrays``."""
    if isinstance(curation, os.PathLike):
        keep, source = read_keep_list(curation), str(curation)
    elif curation in CURATIONS:
        rule = CURATIONS[curation]
        if rule is None:
            return arrays.subset(np.arange(len(arrays)))
        keep, source = rule(data_dir), f"curation {curation!r}"
    else:
        raise ValueError(f"unknown curation {curation!r}; expected one of {', '.join(CURATIONS)} "
                         "or a pathlib.Path to a 'class;id' keep-list")
    keys = arrays.keys
    missing = keep - set(keys)
    if missing:
        ex = ", ".join(f"{c} ({i})" for c, i in sorted(missing)[:3])
        raise DataError(f"{source}: {len(missing)} listed images are not in the loaded data (e.g. {ex}); "
                        "expected the full BUSI folder")
    return arrays.subset(np.asarray([k in keep for k in keys], dtype=bool))
