"""Rule train_rfdetr: fine-tune RF-DETR with rfdetr's own train() on the dataset folder."""

from pathlib import Path

from anodect import logs
from anodect.rfdetr.model import TrainSettings, train

logs.to_file(snakemake.log[0])
train(
    snakemake.input[0],
    TrainSettings.from_config(snakemake.params.settings),
    Path(snakemake.output.checkpoint).parent,
    snakemake.threads,
    snakemake.params.class_label,
)
