"""The duplicate audit (``mtbc audit``): copies of one scan and frames of one lesion in a BUSI
folder. The search's entry (:mod:`~mtbc_lib.dedup.search`: ``find_groups``, its settings
``DedupConfig``, its result ``AuditResult``, the cached keep-lists and groups) is re-exported
here; its stages are :mod:`~mtbc_lib.dedup.decode` (one pass over the PNGs, a worker pool),
:mod:`~mtbc_lib.dedup.stages` (candidates, alignment, SSIM verification, groups),
:mod:`~mtbc_lib.dedup.cache` and :mod:`~mtbc_lib.dedup.tables` (the result's tables and
files); the image geometry is :mod:`~mtbc_lib.dedup.registration`.

Layer 3: imports :mod:`mtbc_lib.core` and :mod:`mtbc_lib.data`.
"""

from mtbc_lib.dedup.search import *  # noqa: F401,F403
from mtbc_lib.dedup.search import __all__  # noqa: F401
