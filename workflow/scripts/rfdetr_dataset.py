"""Rule rfdetr_dataset: COCO train/valid/test folders of ROI crops from annotated scans."""

from anodect import logs
from anodect.rfdetr.dataset import DatasetSettings
from anodect.rfdetr.stage import make_dataset

logs.to_file(snakemake.log[0])
# Crops and records both follow the sample sheet's order (checked inside).
make_dataset(
    list(zip(snakemake.params.scans, snakemake.params.annotated, strict=True)),
    list(snakemake.params.normal),
    snakemake.params.annotations_dir,
    DatasetSettings.from_config(snakemake.params.settings),
    snakemake.params.class_label,
    snakemake.output[0],
    strict=snakemake.config["strict"],
)
