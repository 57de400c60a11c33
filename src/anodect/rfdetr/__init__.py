"""RF-DETR, the supervised half: a COCO training set from annotated scans, fine-tuning
with rfdetr's own ``train()``, and batched predictions per scan.

Modules follow the stage's order: ``annotations`` (VIA or COCO polygons placed on the
crops), ``dataset`` (split by battery, copy-paste augmentation, the COCO folders
rfdetr reads), ``model`` (build, train, load a checkpoint safely, predict) and
``stage`` (what the Snakemake scripts call).
"""
