"""The API fixtures of tests/api, for job tests that go through the HTTP contract."""

from tests.api.conftest import api, batch_rows, inline_worker, settings_overrides

__all__ = ["api", "batch_rows", "inline_worker", "settings_overrides"]
