"""What the book shows: one module per chapter that needs code of its own (the dataset audit,
:mod:`~mtbc_lib.report.audit`; the duplicate explorer, :mod:`~mtbc_lib.report.explorer`; the
leakage chapter, :mod:`~mtbc_lib.report.leakage`), the figures (:mod:`~mtbc_lib.report.plots`),
the book build (:mod:`~mtbc_lib.report.book`) and the reader's view of a notebook
(:mod:`~mtbc_lib.report.reader`).

Layer 7: imports the studies and the layers below them.
"""
