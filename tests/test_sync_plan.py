"""The sync planner alone: what ingest must do so that the index mirrors its source."""

from __future__ import annotations

from mediasearch.core.records import DocKind
from mediasearch.indexing.sync import IndexedObject, SourceObject, plan_sync

IMAGE, VIDEO = DocKind.IMAGE, DocKind.VIDEO


def src(id: str, fp: str, kind: DocKind = IMAGE) -> SourceObject:
    return SourceObject(key=f"{id}.x", uri=f"file:///s/{id}.x", id=id, kind=kind, fingerprint=fp)


def idx(id: str, fp: str, content: str | None, kind: DocKind = IMAGE) -> IndexedObject:
    return IndexedObject(id=id, uri=f"file:///s/{id}.x", kind=kind, fingerprint=fp, content_hash=content)


CONTENT = {"a": "h-a", "b": "h-b", "b2": "h-b", "c": "h-c-new", "t": "h-t", "v2": "h-v", "n": "h-n"}


def test_every_case_of_the_plan() -> None:
    hashed: list[str] = []

    def content_hash(obj: SourceObject) -> str:
        hashed.append(obj.id)
        return CONTENT[obj.id]

    source = [
        src("a", "1"),  # unchanged
        src("t", "2"),  # touched: fingerprint changed, content not
        src("c", "2"),  # updated: content changed
        src("b2", "1"),  # b renamed to b2
        src("n", "1"),  # new
        src("v2", "1", VIDEO),  # video v renamed to v2
    ]
    indexed = [
        idx("a", "1", "h-a"),
        idx("t", "1", "h-t"),
        idx("c", "1", "h-c-old"),
        idx("b", "1", "h-b"),
        idx("v", "1", "h-v", VIDEO),
        idx("gone", "1", "h-gone"),
    ]
    plan = plan_sync(source, indexed, content_hash)
    assert [o.id for o in plan.unchanged] == ["a"]
    assert [(o.id, h) for o, h in plan.touched] == [("t", "h-t")]
    assert [o.id for o in plan.updated] == ["c"]
    assert [(m.old.id, m.new.id) for m in plan.moved] == [("b", "b2"), ("v", "v2")]
    assert [o.id for o in plan.added] == ["n"]
    assert [o.id for o in plan.removed] == ["gone"]
    assert [o.id for o in plan.to_embed] == ["n", "c"]
    assert "a" not in hashed  # an unchanged object is never read


def test_no_content_is_read_when_nothing_is_gone_or_changed() -> None:
    def never(obj: SourceObject) -> str:
        raise AssertionError(f"read {obj.id}")

    plan = plan_sync([src("a", "1"), src("new", "1")], [idx("a", "1", "h-a")], never)
    assert [o.id for o in plan.added] == ["new"] and [o.id for o in plan.unchanged] == ["a"]


def test_a_move_needs_the_same_kind_and_each_old_object_moves_once() -> None:
    hashes = {"x1": "same", "x2": "same", "img": "vid-content"}
    plan = plan_sync(
        [src("x1", "1"), src("x2", "1"), src("img", "1")],
        [idx("old", "1", "same"), idx("vid", "1", "vid-content", VIDEO)],
        lambda o: hashes[o.id],
    )
    assert [(m.old.id, m.new.id) for m in plan.moved] == [("old", "x1")]
    assert [o.id for o in plan.added] == ["x2", "img"]  # a copy is new; an image is no video
    assert [o.id for o in plan.removed] == ["vid"]


def test_append_only_keeps_what_is_gone_and_moves_nothing() -> None:
    plan = plan_sync([src("b2", "1")], [idx("b", "1", "h-b")], lambda o: "h-b", delete=False)
    assert not plan.removed and not plan.moved
    assert [o.id for o in plan.kept] == ["b"] and [o.id for o in plan.added] == ["b2"]


def test_without_a_content_hash_changes_are_embedded() -> None:
    plan = plan_sync(
        [src("a", "2"), src("b2", "1")], [idx("a", "1", None), idx("b", "1", None)], lambda o: None
    )
    assert [o.id for o in plan.updated] == ["a"] and [o.id for o in plan.added] == ["b2"]
    assert [o.id for o in plan.removed] == ["b"]
