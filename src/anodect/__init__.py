"""anodect: anode-crack inspection of lithium-ion battery CT with PatchCore and RF-DETR.

The modules follow the pipeline's stages:

- ``config``: the config file, its schema and its checks;
- ``groundtruth``: annotations as users bring them (VIA polygons);
- ``demo``: the synthetic demo (``demo.generator``), real CT with injected cracks
  (``demo.realct``) and the truth both write (``demo.truth``); no stage imports it;
- ``discovery``: folders of slices to a sample sheet of scans;
- ``imaging`` and ``crops``: slices to windowed 8-bit ROI crops;
- ``patchcore``: memory bank, per-scan score maps, the original tool's model files;
- ``regions`` and ``tracking``: boxes from score maps, cracks linked across slices
  (the decision stage's building blocks);
- ``preflight``: the checks before a run (config, input folders, models), main process only;
- ``workflow``: what the rules ask of the config (model choices, params, sample sheets);
- ``devices``, ``io`` and ``logs``: device choice, atomic outputs, job logging.
"""

__version__ = "0.1.0"
