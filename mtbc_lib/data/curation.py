"""Curation: which BUSI images a run uses.

A curation is a name in :data:`CURATIONS` — ``paper``: the published Curated BUSI keep-list
(450 images, shipped in ``mtbc_lib/data/resources``); ``keep-one``: our duplicate audit
keeping one image of each group of copies (its keep-list, :func:`mtbc_lib.dedup.keep_list`,
is given to :func:`curate` by the caller: the audit sits above this layer); ``none``: raw
BUSI, all 780 — or a path to a keep-list file in the published ``class;id`` format
(:func:`mtbc_lib.data.busi.read_keep_list`). :func:`curate` applies it to decoded arrays.
"""

from __future__ import annotations

import os

import numpy as np

from mtbc_lib.data.busi import PUBLISHED_KEEP_LIST, BusiArrays, DataError, read_keep_list

__all__ = ["CURATIONS", "needs_audit", "curate"]


#: Curation name -> where its keep-list comes from: "published" (the Curated BUSI v1 list,
#: 450 images), "audit" (our duplicate audit's rule of that name, one representative per
#: group of copies), None (raw BUSI, all 780 images).
CURATIONS = {"paper": "published", "keep-one": "audit", "none": None}


def needs_audit(curation) -> bool:
    """Whether the curation's keep-list comes from the duplicate audit.

    Args:
        curation: a curation name of :data:`CURATIONS`, or a path to a keep-list file.

    Returns:
        True for a name whose source in :data:`CURATIONS` is ``"audit"`` (``keep-one``), else False.
    """
    return isinstance(curation, str) and CURATIONS.get(curation) == "audit"


def curate(arrays: BusiArrays, curation="paper", keep: set | None = None) -> BusiArrays:
    """Keep the images of ``arrays`` that a curation rule keeps.

    Args:
        arrays: the decoded dataset.
        curation: a name in :data:`CURATIONS` (``"paper"``: the published keep-list; ``"keep-one"``:
            the audit's, given as ``keep``; ``"none"``: every image), or an ``os.PathLike`` path to a
            ``class;id`` keep-list file.
        keep: the audit's keep-list as ``(class, id)`` pairs, for a curation the audit decides
            (:func:`needs_audit`), and only then; ignored otherwise.

    Returns:
        A new :class:`~mtbc_lib.data.busi.BusiArrays` with the kept images, in their order in ``arrays``
        (a copy of all of them for ``"none"``).

    Raises:
        ValueError: ``curation`` is neither a known name nor a path, or it needs the audit and
            ``keep`` is None.
        DataError: a listed image is not in ``arrays``; the keep-list file is unreadable or malformed
            (:func:`~mtbc_lib.data.busi.read_keep_list`).
    """
    if isinstance(curation, os.PathLike):
        keep, source = read_keep_list(curation), str(curation)
    elif curation in CURATIONS:
        if CURATIONS[curation] is None:
            return arrays.subset(np.arange(len(arrays)))
        if needs_audit(curation) and keep is None:
            raise ValueError(f"curation {curation!r}: needs the duplicate audit's keep-list "
                             f"(keep=mtbc_lib.dedup.keep_list(data_dir, {curation!r}))")
        if not needs_audit(curation):
            keep = read_keep_list(PUBLISHED_KEEP_LIST)
        source = f"curation {curation!r}"
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
