"""The crack segmenter: a compact U-Net that learns cracks rendered into the user's own normal scans.

Modules follow the stage's order: ``plugin`` (what the pipeline asks of the model;
plain Python), ``inputs`` (a slice, its neighbours and its residual against the
scan's distant slices, as the network reads them), ``network`` (the U-Net),
``training`` (cracks rendered on the fly with ``anodect.synthesis``, the held-out
threshold) and ``stage`` (what the rule scripts call). Nothing heavy is imported here.
"""
