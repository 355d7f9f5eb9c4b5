"""Object store: a local folder or an S3 bucket prefix behind one small interface.

Keys are '/'-separated and relative to the store's root. Every object also has a URI
(`s3://bucket/key` or `file:///abs/path`) that any stage can resolve with `open_uri`, which is what
manifest lines and index documents carry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, unquote, urlparse


class StoreError(Exception):
    """A store operation failed; the message names the object."""


class ObjectNotFound(StoreError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object not found"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    fingerprint: str  # changes whenever the content may have changed (ETag, or size+mtime)


class ObjectStore(ABC):
    """What the pipeline needs from a blob store, nothing more.

    Callers never ask which kind of store they hold: what differs between a folder and a bucket
    (a file to hand FFmpeg or a web server, a URL a browser can fetch) is asked of the store itself.
    """

    @property
    @abstractmethod
    def root_uri(self) -> str: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL a browser can fetch directly, or None when the API must serve the object itself."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abstractmethod
    def content_hash(self, key: str, info: ObjectInfo | None = None, local: Path | None = None) -> str:
        """A digest of the object's bytes, `<algorithm>:<hex>`: equal for equal bytes wherever and
        however the object was written, so a renamed or moved object can be recognised.

        `info`: the object's listing entry, when the caller has one (saves a request); `local`: a file
        holding the same bytes, when the caller has one (saves a download). Raises `ObjectNotFound`.
        """

    def local_path(self, key: str) -> Path | None:
        """The object's file on this machine (which may not exist), or None when there is none."""
        return None

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A file holding the object: the file itself where there is one, else a temporary download.

        For readers that must seek (FFmpeg cannot seek in a streaming S3 body); the download is
        removed on exit.
        """
        path = self.local_path(key)
        if path is not None:
            yield path
            return
        fd, tmp = tempfile.mkstemp(suffix=Path(key).suffix.lower(), prefix="mediasearch-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.get(key))
            yield Path(tmp)
        finally:
            os.unlink(tmp)

    @property
    def display_root(self) -> str:
        """Where the store is, written as a person would type it on the command line."""
        return self.root_uri

    def key_of(self, uri: str) -> str | None:
        """The key of `uri` inside this store, or None when it lies outside."""
        root = self.root_uri.rstrip("/") + "/"
        if uri.startswith(root):
            key = uri[len(root) :]
            return key if _is_safe_key(key) else None
        return None


def _is_safe_key(key: str) -> bool:
    parts = key.split("/")
    return bool(key) and not key.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _check_key(key: str) -> str:
    if not _is_safe_key(key):
        raise StoreError(f"invalid key {key!r}: keys are relative, '/'-separated, with no '.' or '..' parts")
    return key


class LocalStore(ObjectStore):
    """A folder on disk. Writes are atomic (temp file + rename) so a crashed job never leaves half a file."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def root_uri(self) -> str:
        return self.root.as_uri()

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    @property
    def display_root(self) -> str:
        return str(self.root)

    def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.uri(key)} does not exist") from None
        except IsADirectoryError:
            raise ObjectNotFound(f"{self.uri(key)} is a folder, not an object") from None
        except OSError as exc:  # a name too long, a permission, a parent that is a file: the name is at fault
            raise StoreError(f"cannot read {self.uri(key)}: {exc.strerror or exc}") from None

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self.path(key).stat()
        except (OSError, ValueError):  # missing, a name too long or holding a NUL: no such object
            return None
        if not os.path.isfile(self.path(key)):
            return None
        return ObjectInfo(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    yield ObjectInfo(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def content_hash(self, key: str, info: ObjectInfo | None = None, local: Path | None = None) -> str:
        # A file has no stored digest: its bytes are read (only for objects a sync asks about and
        # objects being embedded, which are read anyway).
        try:
            return file_digest(local or self.path(key), "sha256")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.uri(key)} does not exist") from None

    def uri(self, key: str) -> str:
        return self.root_uri.rstrip("/") + "/" + quote(_check_key(key))

    def key_of(self, uri: str) -> str | None:
        if uri.startswith("file:"):
            path = _file_uri_path(uri)
            if path is None:
                return None
            uri = path.as_uri()
        key = super().key_of(uri)
        # `uri(key)` quotes the key, so its inverse unquotes it: "a%20b.png" is the file "a b.png".
        key = unquote(key) if key is not None else None
        return key if key is not None and _is_safe_key(key) else None

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None


def _file_uri_path(uri: str) -> Path | None:
    """The resolved local path a file:// URI names (so '..' cannot escape a root), or None where it
    names none: a URI of another host (`file://host/...`), or a path holding a NUL byte."""
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        return None
    path = unquote(parsed.path)
    if "\x00" in path:
        return None
    try:
        return Path(path).resolve()
    except (OSError, ValueError):
        return None


def _local_location(text: str) -> str:
    """The folder path of a file:// location; StoreError for one that names no local path."""
    path = _file_uri_path(text)
    if path is None:
        raise StoreError(
            f"unsupported location {text!r}: a file:// URI must name a path on this machine "
            "(file:///path or file://localhost/path)"
        )
    return str(path)


class S3Store(ObjectStore):
    """An S3 bucket and key prefix. Honours AWS_ENDPOINT_URL, so LocalStack and moto work unchanged."""

    def __init__(self, bucket: str, prefix: str = "", client: object | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self):  # boto3 client; typed loosely so boto3 stubs stay optional
        if self._client is None:
            self._client = s3_client()
        return self._client

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _full(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"{self.uri(key)} does not exist") from None
            raise StoreError(f"cannot read {self.uri(key)}: {code or exc}") from exc

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, **extra)

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreError(f"cannot stat {self.uri(key)}: {exc}") from exc
        return ObjectInfo(key, int(head["ContentLength"]), head["ETag"].strip('"'))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # A listing prefix may end in '/' or stop mid-name, so it is joined, not validated as a key.
        full_prefix = (
            "/".join(p for p in (self.prefix, prefix) if p)
            if prefix
            else (self.prefix + "/" if self.prefix else "")
        )
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                yield ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["ETag"].strip('"'))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def content_hash(self, key: str, info: ObjectInfo | None = None, local: Path | None = None) -> str:
        # The ETag of an object uploaded in one part (PutObject, or a copy of one) is the MD5 of its
        # bytes, so it is taken as the digest without a read. A multipart upload's ETag ("<md5 of the
        # parts' MD5s>-<parts>") depends on how the bytes were cut into parts, and `aws s3 mv` of a
        # large object is such a multipart copy: those objects are read and hashed, so a move keeps
        # its match. Under SSE-KMS or SSE-C the ETag is not a digest of the bytes at all; it then
        # matches nothing else, and such an object is re-embedded when moved rather than mismatched.
        info = info or self.stat(key)
        if info is None:
            raise ObjectNotFound(f"{self.uri(key)} does not exist")
        etag = info.fingerprint
        if "-" not in etag:
            return f"md5:{etag}"
        if local is not None:
            return file_digest(local, "md5")
        from botocore.exceptions import ClientError

        digest = hashlib.md5(usedforsecurity=False)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"{self.uri(key)} does not exist") from None
            raise StoreError(f"cannot read {self.uri(key)}: {exc}") from exc
        for chunk in iter(lambda: body.read(HASH_CHUNK), b""):
            digest.update(chunk)
        return f"md5:{digest.hexdigest()}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_s
        )


_client_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached_client(endpoint: str | None, region: str | None):
    import boto3
    from botocore.config import Config

    # boto3 client creation is not thread-safe, and a client is; share one per endpoint.
    with _client_lock:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            # SigV4 presigned URLs: SigV2 is refused by newer regions and by KMS-encrypted objects.
            config=Config(
                signature_version="s3v4",
                max_pool_connections=32,
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )


def s3_client():
    """An S3 client for the current environment (AWS_ENDPOINT_URL[_S3], AWS_REGION)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _cached_client(endpoint, region)


def open_store(location: str | os.PathLike[str]) -> ObjectStore:
    """A store rooted at `location`: `s3://bucket/prefix`, `file:///path` or a plain folder path."""
    text = os.fspath(location)
    if text.startswith("s3://"):
        return open_s3_store(text)
    if text.startswith("file://"):
        return LocalStore(_local_location(text))
    if "://" in text:
        raise StoreError(f"unsupported store location {text!r}: use a folder path, file:// or s3://")
    return LocalStore(text)


def open_s3_store(location: str) -> S3Store:
    """A store rooted at `s3://bucket/prefix`, for what can only read S3 (SageMaker); else StoreError."""
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"invalid S3 location {location!r}: expected s3://bucket/prefix")
    return S3Store(parsed.netloc, parsed.path.lstrip("/"))


def open_uri(uri: str) -> tuple[ObjectStore, str]:
    """Split an object URI into (store, key), so a record can be fetched wherever it lives."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise StoreError(f"invalid S3 URI {uri!r}: expected s3://bucket/key")
        return S3Store(parsed.netloc), key
    path = Path(_local_location(uri) if uri.startswith("file://") else uri).expanduser().resolve()
    return LocalStore(path.parent), path.name


def read_uri(uri: str) -> bytes:
    store, key = open_uri(uri)
    return store.get(key)


def content_digest(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


HASH_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    """`<algorithm>:<hex>` of a file's bytes, read in chunks (videos may be large)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return f"{algorithm}:{digest.hexdigest()}"
