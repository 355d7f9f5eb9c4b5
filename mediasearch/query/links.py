"""URLs a client can open for a result's media: presigned for S3, served by the API for local files."""

from __future__ import annotations

from urllib.parse import quote

from mediasearch.core.storage import StoreError, open_uri


class MediaLinks:
    def __init__(self, base_url: str = "", presign_expiry_s: int = 3600) -> None:
        self.base_url = base_url.rstrip("/")
        self.presign_expiry_s = presign_expiry_s

    def url(self, doc_id: str, uri: str | None, part: str = "media") -> str | None:
        """`part` is "media", "thumbnail" or "strip"; objects without a direct URL go through `GET /media/{id}`."""
        if not uri:
            return None
        # A local file never has a direct URL: skipping its store saves resolving a path per link.
        if not uri.startswith("file://"):
            try:
                store, key = open_uri(uri)
                direct = store.presigned_url(key, self.presign_expiry_s)
            except StoreError:
                return None
            if direct is not None:
                return direct
        suffix = "" if part == "media" else f"/{part}"
        return f"{self.base_url}/media/{quote(doc_id)}{suffix}"
