"""URLs a client can open for a result's media: presigned for S3, served by the API for local files."""

from __future__ import annotations

from urllib.parse import quote

from mediasearch.core.storage import S3Store, StoreError, open_uri


class MediaLinks:
    def __init__(self, base_url: str = "", presign_expiry_s: int = 3600) -> None:
        self.base_url = base_url.rstrip("/")
        self.presign_expiry_s = presign_expiry_s

    def url(self, doc_id: str, uri: str | None, part: str = "media") -> str | None:
        """`part` is "media" or "thumbnail"; local files go through `GET /media/{id}`."""
        if not uri:
            return None
        if uri.startswith("s3://"):
            try:
                store, key = open_uri(uri)
            except StoreError:
                return None
            assert isinstance(store, S3Store)
            return store.presigned_url(key, self.presign_expiry_s)
        suffix = "" if part == "media" else f"/{part}"
        return f"{self.base_url}/media/{quote(doc_id)}{suffix}"
