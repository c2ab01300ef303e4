"""How the named limits relate (TigerBeetle's "put a limit on everything" needs the limits to
agree with each other): ingestion's, the core's, the services' and the settings' defaults."""

from __future__ import annotations

import math

import pytest

from ledger.config import Settings
from ledger.core import limits as core
from ledger.ingest import limits as ingest
from ledger.services import limits as service


def test_a_cell_fits_in_a_field_and_what_quarantine_keeps_fits_in_a_cell() -> None:
    assert ingest.cell_chars_max * 4 <= ingest.field_bytes_max  # four UTF-8 bytes a character at most
    assert ingest.quarantined_cell_chars_max <= ingest.cell_chars_max
    assert ingest.sniff_bytes <= ingest.field_bytes_max


def test_xlsx_limits_are_consistent() -> None:
    assert ingest.xlsx_ratio_floor < ingest.xlsx_uncompressed_max
    # A sheet at the cell cap inflates to well past what the archive may inflate to only if
    # cells are tiny; the grid cap must admit the biggest manifest at a realistic width.
    assert ingest.xlsx_cells_max >= 1_000_000 * 20


def test_the_biggest_manifest_stays_within_what_the_core_can_count_and_prove() -> None:
    assert ingest.manifest_rows_max < core.integer_max
    # Row numbers index a tree of at most manifest_rows_max leaves: its proofs fit the cap.
    assert math.ceil(math.log2(ingest.manifest_rows_max)) <= core.merkle_proof_len_max


def test_default_settings_agree_with_the_code_limits() -> None:
    settings = Settings()
    settings.check()
    assert settings.import_chunk_rows <= ingest.manifest_rows_max
    assert settings.batch_rows_max <= ingest.manifest_rows_max
    assert settings.imports_queued_per_lab_max <= settings.imports_queued_max
    assert settings.job_retry_base_seconds <= settings.job_retry_max_seconds
    # A worker beats three times a timeout; below about half a second that is a busy loop.
    assert settings.job_heartbeat_timeout_seconds / 3 >= 0.5


def test_request_limits_agree() -> None:
    assert service.QUARANTINE_PAGE_MAX <= service.BULK_ITEMS_MAX
    assert ingest.manifest_rows_max >= service.IMPORT_ROWS_PAGE_MAX
    # A note is stored in a review entry; its UTF-8 bytes stay far below a multipart field.
    assert ingest.form_field_bytes_max >= service.NOTE_CHARS_MAX * 4


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LEDGER_BATCH_ROWS": "0"}, "LEDGER_BATCH_ROWS"),
        ({"LEDGER_IMPORTS_QUEUED_MAX": "4", "LEDGER_IMPORTS_QUEUED_PER_LAB_MAX": "5"}, "PER_LAB"),
        ({"LEDGER_JOB_RETRY_BASE_SECONDS": "10", "LEDGER_JOB_RETRY_MAX_SECONDS": "5"}, "BASE_SECONDS"),
        ({"LEDGER_JOB_RETRY_ATTEMPTS": "0"}, "LEDGER_JOB_RETRY_ATTEMPTS"),
        ({"LEDGER_JOB_HEARTBEAT_TIMEOUT": "x"}, "LEDGER_JOB_HEARTBEAT_TIMEOUT"),
    ],
)
def test_contradicting_settings_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env(env)
