"""Training and evaluating runs: a run's configuration (:mod:`~mtbc_lib.engine.config`:
``TrainConfig``, the profiles, the one run-name scheme), the fold trainer
(:mod:`~mtbc_lib.engine.train`), inference and scoring (:mod:`~mtbc_lib.engine.evaluate`),
where and how a run computes (:mod:`~mtbc_lib.engine.device`) and a run's files
(:mod:`~mtbc_lib.engine.runs`: atomic, resumable, held by one process).

Layer 5: imports the layers below (core, data, dedup, networks, losses, metrics, refine).
"""
