"""One contract for both stores: the local folder and S3 (moto over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mediasearch.core.storage import (
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StoreError,
    open_s3_store,
    open_store,
    open_uri,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        yield open_store(f"s3://{bucket}/root")


def test_put_get_stat_list_delete(store: ObjectStore) -> None:
    store.put("a/one.txt", b"1")
    store.put("a/b/two.txt", b"22")
    store.put("c.txt", b"333")
    assert store.get("a/b/two.txt") == b"22"
    info = store.stat("a/b/two.txt")
    assert info is not None and info.size == 2 and info.fingerprint
    assert store.stat("missing.txt") is None
    assert sorted(o.key for o in store.list("a/")) == ["a/b/two.txt", "a/one.txt"]
    assert sorted(o.key for o in store.list()) == ["a/b/two.txt", "a/one.txt", "c.txt"]
    store.delete("c.txt")
    assert not store.exists("c.txt")


def test_fingerprint_changes_with_content(store: ObjectStore) -> None:
    store.put("x.bin", b"first")
    before = store.stat("x.bin")
    store.put("x.bin", b"second!")
    after = store.stat("x.bin")
    assert before is not None and after is not None and before.fingerprint != after.fingerprint


def test_missing_object_names_the_uri(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match=r"nope\.png does not exist"):
        store.get("nope.png")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(StoreError, match="invalid key"):
        store.put(key, b"x")


def test_uri_round_trip(store: ObjectStore) -> None:
    store.put("dir/file name.png", b"png")
    uri = store.uri("dir/file name.png")
    assert store.key_of(uri) == "dir/file name.png" or store.key_of(uri) == "dir/file%20name.png"
    other, key = open_uri(uri)
    assert other.get(key) == b"png"


def test_key_of_refuses_uris_outside_the_store(tmp_path) -> None:
    store = LocalStore(tmp_path / "root")
    assert store.key_of((tmp_path / "elsewhere.png").as_uri()) is None
    assert store.key_of(store.root_uri + "/../elsewhere.png") is None
    assert store.key_of("https://example.com/x.png") is None
    assert S3Store("b", "p").key_of("s3://b/p/x.png") == "x.png"
    assert S3Store("b", "p").key_of("s3://b/other/x.png") is None
    assert S3Store("b", "p").key_of("s3://b/p/../x.png") is None


def test_open_store_rejects_unknown_schemes() -> None:
    with pytest.raises(StoreError, match="unsupported"):
        open_store("ftp://host/x")


# ---- what differs between a folder and a bucket, asked of the store ----------------------------------


@pytest.mark.parametrize("location", ["/tmp/media", "file:///tmp/media", "s3://", "https://bucket/x"])
def test_open_s3_store_refuses_what_is_not_a_bucket(location: str) -> None:
    with pytest.raises(StoreError, match="expected s3://bucket/prefix"):
        open_s3_store(location)


def test_open_s3_store_opens_a_bucket_prefix() -> None:
    store = open_s3_store("s3://bucket/media/photos")
    assert store.bucket == "bucket" and store.uri("a.png") == "s3://bucket/media/photos/a.png"


def test_local_copy_holds_the_object_and_a_download_is_removed(store: ObjectStore) -> None:
    store.put("clips/v.MP4", b"video bytes")
    with store.local_copy("clips/v.MP4") as path:
        assert path.read_bytes() == b"video bytes"
        assert path.suffix == ".mp4" or path == store.local_path("clips/v.MP4")
    if store.local_path("clips/v.MP4") is None:
        assert not path.exists()  # a temporary download, gone once the block ends
    else:
        assert path.exists()  # the store's own file is never deleted


def test_local_copy_of_a_missing_object_leaves_nothing_behind(tmp_path, s3_bucket: str) -> None:
    import tempfile

    store = open_store(f"s3://{s3_bucket}/root")
    before = set(Path(tempfile.gettempdir()).glob("mediasearch-*"))
    with pytest.raises(ObjectNotFound), store.local_copy("missing.mp4"):
        pass
    assert set(Path(tempfile.gettempdir()).glob("mediasearch-*")) == before


def test_a_folder_has_local_files_and_no_presigned_urls(tmp_path) -> None:
    store = LocalStore(tmp_path / "root")
    store.put("a/b.png", b"png")
    assert store.local_path("a/b.png") == store.root / "a" / "b.png"
    assert store.local_path("a/missing.png") == store.root / "a" / "missing.png"
    assert store.presigned_url("a/b.png", 60) is None
    assert store.display_root == str(store.root)
    with pytest.raises(StoreError, match="invalid key"):
        store.local_path("../escape.png")


def test_a_bucket_has_presigned_urls_and_no_local_files(s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/root")
    store.put("a/b.png", b"png")
    assert store.local_path("a/b.png") is None
    url = store.presigned_url("a/b.png", 60)
    assert url is not None and f"{s3_bucket}/root/a/b.png" in url and "Signature" in url
    assert store.display_root == f"s3://{s3_bucket}/root"


def test_no_module_asks_which_kind_of_store_it_holds() -> None:
    """What differs between stores is asked of the store (above), never by checking its class."""
    import re

    package = Path(__file__).resolve().parents[1] / "mediasearch"
    checks = re.compile(r"isinstance\([^)]*Store\b")
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in sorted(package.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if checks.search(line)
    ]
    assert offenders == []
