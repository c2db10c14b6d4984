"""Analyses that prune and evaluate models and return plain records: comparisons of checkpoints
(:mod:`.compare`), accuracy-vs-rate sweeps (:mod:`.sweep`), per-layer sensitivity scans and the ratios
suggested from them (:mod:`.sensitivity`), and the resumable result tables they write (:mod:`.results`).

Rendering those records (tables, figures, HTML) is :mod:`prunekit.report`'s job; this package imports
nothing from it.
"""
