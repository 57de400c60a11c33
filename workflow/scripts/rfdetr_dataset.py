"""Rule rfdetr_dataset: COCO train/valid/test folders of ROI crops from annotated scans."""

from anodect import logs
from anodect.rfdetr.dataset import DatasetSettings
from anodect.rfdetr.stage import make_dataset

logs.to_file(snakemake.log[0])
crops = {path.rsplit("/", 1)[-1].removesuffix(".npz"): path for path in snakemake.input.annotated}
make_dataset(
    [(record, crops[record["scan_id"]]) for record in snakemake.params.scans],
    list(snakemake.input.normal),
    snakemake.params.annotations_dir,
    DatasetSettings.from_config(snakemake.params.settings),
    snakemake.params.class_label,
    snakemake.output[0],
)
