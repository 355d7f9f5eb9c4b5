"""The sync cases of tests/test_sync.py on S3 (moto's server over HTTP): deletions, renames by copy +
delete (what `aws s3 mv` does), and a touch, which S3 can only show as a multipart re-upload of the
same bytes (a new ETag, the same content)."""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
import pytest

from mediasearch.core.records import DocKind
from mediasearch.core.storage import S3Store, open_store
from mediasearch.index.base import IndexFilter
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from tests.conftest import COLOURS, image_bytes
from tests.test_sync import (
    WORK,
    all_docs,
    assert_thumbnails_exist,
    doc_id,
    fill,
    load_everything,
    outputs,
    run,
    video_artefacts,
    video_bytes,
)


@pytest.fixture
def s3(moto_endpoint: str):  # boto3 S3 client
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def indexed(s3_bucket: str, tmp_path: Path, clip_model) -> tuple[S3Store, LanceDBIndex]:
    store = open_store(f"s3://{s3_bucket}/lib")
    assert isinstance(store, S3Store)
    fill(store, {"one": video_bytes(1), "two": video_bytes(2)})
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    first = run(store, index, clip_model)
    assert not first.failures and first.added == 6
    return store, index


def mv(s3, bucket: str, old: str, new: str) -> None:
    s3.copy_object(Bucket=bucket, Key=f"lib/{new}", CopySource={"Bucket": bucket, "Key": f"lib/{old}"})
    s3.delete_object(Bucket=bucket, Key=f"lib/{old}")


def test_deletes_and_renames_on_s3(indexed, s3, s3_bucket: str, clip_model) -> None:
    store, index = indexed
    before = index.count()
    gone_vid = doc_id(store, "clips/two.mp4")
    gone_scenes = index.count(IndexFilter(kinds=(DocKind.SCENE,), video_id=gone_vid))
    old_image = index.get_with_vectors(doc_id(store, "photos/red.png"))
    old_video = index.get_with_vectors(doc_id(store, "clips/one.mp4"))
    s3.delete_object(Bucket=s3_bucket, Key="lib/photos/blue.png")
    s3.delete_object(Bucket=s3_bucket, Key="lib/clips/two.mp4")
    mv(s3, s3_bucket, "photos/red.png", "archive/red.png")
    mv(s3, s3_bucket, "clips/one.mp4", "archive/one.mp4")

    report = run(store, index, clip_model)
    assert report.transform.records == 0 and report.added == 0 and not report.failures
    assert len(report.sync.moved) == 2 and len(report.sync.removed) == 2
    assert index.count() == before - 1 - 1 - gone_scenes

    image = index.get_with_vectors(doc_id(store, "archive/red.png"))
    video = index.get_with_vectors(doc_id(store, "archive/one.mp4"))
    assert image is not None and video is not None and old_image is not None and old_video is not None
    np.testing.assert_array_equal(image.clip_vector, old_image.clip_vector)
    np.testing.assert_array_equal(video.clip_vector, old_video.clip_vector)
    assert image.content_hash is not None and image.content_hash.startswith("md5:")
    for old in (old_image.id, old_video.id, gone_vid, doc_id(store, "photos/blue.png")):
        assert index.get(old) is None and index.count(IndexFilter(video_id=old)) == 0
    for vid in (old_video.id, gone_vid):
        assert video_artefacts(store, vid) == []
        assert not any(f"frames-{vid}-" in k for k in outputs(store))
    scenes = [d for d in all_docs(index) if d.kind is DocKind.SCENE and d.video_id == video.id]
    assert scenes and all(s.uri == store.uri("archive/one.mp4") for s in scenes)
    assert_thumbnails_exist(store, index)

    reload = load_everything(store, index, ClipHandler(clip_model), WORK)
    assert reload.stale_images >= 1 and index.get(old_image.id) is None
    assert index.count() == before - 2 - gone_scenes


def test_a_multipart_reupload_of_the_same_bytes_is_a_touch(indexed, s3, s3_bucket: str, clip_model) -> None:
    store, index = indexed
    key = "lib/photos/green.png"
    data = image_bytes(COLOURS["green"])
    upload = s3.create_multipart_upload(Bucket=s3_bucket, Key=key)
    part = s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=data)
    s3.complete_multipart_upload(
        Bucket=s3_bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    info = store.stat("photos/green.png")
    assert info is not None and info.fingerprint.endswith("-1")  # a multipart ETag, not the MD5
    # The content hash is the MD5 of the bytes whichever way they were uploaded.
    import hashlib

    assert store.content_hash("photos/green.png") == f"md5:{hashlib.md5(data).hexdigest()}"

    report = run(store, index, clip_model)
    assert report.sync.touched == [doc_id(store, "photos/green.png")] and report.transform.records == 0
    doc = index.get(doc_id(store, "photos/green.png"))
    assert doc is not None and doc.fingerprint == info.fingerprint
