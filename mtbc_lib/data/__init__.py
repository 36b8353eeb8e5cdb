"""The data: reading the raw BUSI folder into arrays (:mod:`~mtbc_lib.data.busi`, whose
public names this package re-exports), which images a run keeps
(:mod:`~mtbc_lib.data.curation`), the cross-validation folds (:mod:`~mtbc_lib.data.splits`),
deterministic oversampling (:mod:`~mtbc_lib.data.oversampling`) and training-time
augmentation (:mod:`~mtbc_lib.data.augment`). The published Curated BUSI keep-list ships in
``resources/``.

Layer 2: imports only :mod:`mtbc_lib.core`. What needs the duplicate audit (the ``keep-one``
curation, folds of scans or lesions) takes the audit's groups as an argument.
"""

from mtbc_lib.data.busi import *  # noqa: F401,F403
from mtbc_lib.data.busi import __all__  # noqa: F401
