"""One contract for both stores: the local folder and S3 (moto over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mediasearch.core.storage import (
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StoreError,
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
