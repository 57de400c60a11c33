"""Rule summarise: tidy tables over both models and every inspected scan."""

import pandas as pd

from anodect import logs
from anodect.decisions import battery_table
from anodect.io import read_table, write_table

logs.to_file(snakemake.log[0])
tables = {
    name: pd.concat([read_table(p) for p in getattr(snakemake.input, name)], ignore_index=True)
    for name in ("detections", "cracks", "slices")
}
for name, table in tables.items():
    write_table(getattr(snakemake.output, name), table)
write_table(
    snakemake.output.batteries,
    battery_table(snakemake.params.scans, tables["cracks"], snakemake.params.models),
)
