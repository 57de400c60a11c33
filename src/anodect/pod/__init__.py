"""Probability of detection (issue #28): how small a crack each model finds on the user's own cells.

The study's stages, in pipeline order:

* ``design``: cracks of controlled depth, width and length rendered into normal
  scans no model trained on (``anodect.synthesis``), the cracked copies written as
  ordinary crop files beside the clean scans;
* each model scores them through its own scoring (``ModelPlugin.score_folder``);
* ``judge``: each model's decisions at its operating threshold (``anodect.decisions``),
  a hit being a confirmed crack that overlaps the rendered footprint; the clean
  scans give the false calls;
* ``analysis``: hit/miss POD curves (binomial GLM on log size, MIL-HDBK-1823A),
  a90 and a90/95 by the likelihood-ratio profile, false calls with Clopper-Pearson
  bounds, and the report's figures.
"""
