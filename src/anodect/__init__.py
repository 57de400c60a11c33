"""anodect: anode-crack inspection of lithium-ion battery CT with PatchCore and RF-DETR.

The modules follow the pipeline's stages:

- ``config``: the config file, its schema and its checks;
- ``generator`` and ``groundtruth``: the synthetic battery-CT demo and its truth;
- ``discovery``: folders of slices to a sample sheet of scans;
- ``imaging`` and ``crops``: slices to windowed 8-bit ROI crops;
- ``workflow``: what the Snakefile asks of the config;
- ``io`` and ``logs``: atomic outputs and job logging.
"""

__version__ = "0.1.0"
