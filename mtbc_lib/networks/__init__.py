"""The networks: the backbone registry (:mod:`~mtbc_lib.networks.registry`, re-exported
here: ``BACKBONES``, ``TASKS``, ``build_model``...), the paper's U-Net++
(:mod:`~mtbc_lib.networks.unetplusplus`) and nnU-Net-style network
(:mod:`~mtbc_lib.networks.nnunet`) with the parts they share (:mod:`~mtbc_lib.networks.blocks`),
and U-Nets built from other libraries (:mod:`~mtbc_lib.networks.library_unets`).

Layer 4, beside :mod:`mtbc_lib.losses`, :mod:`mtbc_lib.metrics` and :mod:`mtbc_lib.refine`.
"""

from mtbc_lib.networks.registry import *  # noqa: F401,F403
from mtbc_lib.networks.registry import __all__  # noqa: F401
