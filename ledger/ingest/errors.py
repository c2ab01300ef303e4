"""Why a manifest could not be read at all. ``code`` is stable and goes into the import's error."""

from __future__ import annotations

__all__ = ["ManifestError", "MultipartError", "UploadTooLarge"]


class ManifestError(Exception):
    """The file is not a readable table: empty, binary, undecodable, too large."""

    def __init__(self, code: str, message: str, *, row: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.row = row


class MultipartError(Exception):
    """The upload request itself is malformed; ``field`` names the form field at fault."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class UploadTooLarge(MultipartError):
    def __init__(self, limit: int) -> None:
        super().__init__("upload_too_large", f"the upload is larger than {limit} bytes")
        self.limit = limit
