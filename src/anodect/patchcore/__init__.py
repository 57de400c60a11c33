"""PatchCore, the unsupervised model: memory bank, scoring, and the original tool's files.

Modules: ``plugin`` (what the pipeline asks of the model: names, choice, checks, model
card; plain Python), ``backbones``, ``coreset``, ``search``, ``volume`` and ``model``
(the model itself), ``legacy`` (the original tool's files; ``files`` checks them with the
standard library alone, for the config check) and ``stage`` (what the
rule scripts call). Nothing heavy is imported here: the planner imports ``plugin``.
"""
