"""Rule qc_table: every scan's QC rows in one table."""

import pandas as pd

from anodect import logs
from anodect.io import read_table, write_table

logs.to_file(snakemake.log[0])
tables = [read_table(path) for path in snakemake.params.files]
write_table(snakemake.output[0], pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
