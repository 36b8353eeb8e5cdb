"""The studies built from runs: the ablation grid (:mod:`~mtbc_lib.studies.grid`, papermill
per setting), Table 5 (:mod:`~mtbc_lib.studies.ablation`), what the training budget bought
(:mod:`~mtbc_lib.studies.budget`), the paper's claims tested per image
(:mod:`~mtbc_lib.studies.claims`), the recipe study (:mod:`~mtbc_lib.studies.recipe`) and the
leakage study (:mod:`~mtbc_lib.studies.leakage`).

Layer 6: imports the engine and the layers below it.
"""
