"""Named limits of ingestion: every one a hostile file could otherwise push past."""

from __future__ import annotations

__all__ = [
    "cell_chars_max",
    "chunk_rows",
    "field_bytes_max",
    "form_field_bytes_max",
    "manifest_rows_max",
    "quarantined_cell_chars_max",
    "row_cells_max",
    "sniff_bytes",
]

# One CSV field; a longer one (a lone quote swallowing the file, a 50 MB line) makes its
# record a quarantined row instead of a memory spike.
field_bytes_max = 1_048_576
cell_chars_max = 65_536
row_cells_max = 1_000
manifest_rows_max = 10_000_000
# Rows validated, hashed and staged together.
chunk_rows = 5_000
# What a quarantined row keeps of each original cell.
quarantined_cell_chars_max = 4_096
form_field_bytes_max = 65_536
sniff_bytes = 65_536
