"""Named limits of ingestion: every one a hostile file could otherwise push past."""

from __future__ import annotations

__all__ = [
    "cell_chars_max",
    "field_bytes_max",
    "form_field_bytes_max",
    "form_fields_bytes_max",
    "form_fields_max",
    "manifest_rows_max",
    "quarantined_cell_chars_max",
    "row_cells_max",
    "sniff_bytes",
    "xlsx_cells_max",
    "xlsx_members_max",
    "xlsx_ratio_floor",
    "xlsx_ratio_max",
    "xlsx_uncompressed_max",
]

# One CSV field; a longer one (a lone quote swallowing the file, a 50 MB line) makes its
# record a quarantined row instead of a memory spike.
field_bytes_max = 1_048_576
cell_chars_max = 65_536
row_cells_max = 1_000
manifest_rows_max = 10_000_000
# What a quarantined row keeps of each original cell.
quarantined_cell_chars_max = 4_096
# The form fields of an upload other than its file (policy, lab, dry_run, encoding, sheet):
# each, how many, and all of them together. Each is held in memory while the body arrives.
form_field_bytes_max = 65_536
form_fields_max = 20
form_fields_bytes_max = 256 * 1024
sniff_bytes = 65_536

# An XLSX is a zip: its parts are inflated (and the sheet held by calamine) before a row is
# read, so what the parts inflate to is capped, and checked by actually inflating them, not
# by trusting the sizes the archive declares.
xlsx_uncompressed_max = 512 * 2**20
xlsx_members_max = 10_000
# Calamine holds a sheet as a dense grid (about 30 bytes a cell) from its first cell to its
# last: 1M rows by 20 columns fit; a stray cell at XFD1048576 does not.
xlsx_cells_max = 20_000_000
# Spreadsheet XML compresses 10-30x; a part compressing far better than this is a bomb.
# Only judged on parts past ``xlsx_ratio_floor`` bytes, where a ratio means something.
xlsx_ratio_max = 200
xlsx_ratio_floor = 1 * 2**20
