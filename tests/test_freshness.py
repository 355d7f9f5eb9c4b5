"""A running server sees another process's commits within the refresh interval (default 1 s).

Real processes: `mediasearch serve` on a free port, and a writer process committing documents with
`LanceDBIndex.upsert` as an ingest does. The bound asserted is the issue's: at most 2 s with the
default settings, measured from the writer's commit to the server's /search returning the item.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mediasearch.core.defaults import INDEX_REFRESH_S
from tests.conftest import free_port
from tests.freshness import Writer, poll, search_finds, seen_after, server, server_env

# What the issue asks of the default; the default interval must leave room for polling and a request.
BOUND_S = 2.0
TINY_CLIP_DIM = 16


def test_the_default_refresh_leaves_room_within_the_bound() -> None:
    assert INDEX_REFRESH_S <= BOUND_S / 2


def test_a_server_started_before_the_index_exists_sees_every_later_commit(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    uri = tmp_path / "lancedb"
    env = server_env(uri, tmp_path / "media", tiny_clip_dir)
    writer = Writer(str(uri), "media", TINY_CLIP_DIM, env)
    try:
        with server(free_port(), env, tmp_path / "server.log") as client:
            # No collection yet: an honest 503 naming where the index should be, not "ok, 0 documents".
            missing = client.get("/health")
            assert missing.status_code == 503, missing.text
            assert (
                missing.json()["detail"]["reason"]
                == f"no index at {uri}/media: run `mediasearch ingest` to build it"
            )

            # The table is created by another process after the server started.
            ids, committed = writer.write(5, "first")
            waited = seen_after(client, ids[-1], committed, timeout_s=10)
            assert waited <= BOUND_S, (
                f"a table created after the server started was seen after {waited:.2f} s"
            )
            health = poll(lambda: (r := client.get("/health")).status_code == 200 and r.json(), timeout_s=5)
            assert health["documents"] == 5

            # Later commits to the table the server already holds open: the case that used to stay
            # at the count it first saw until a restart.
            for round_ in range(3):
                ids, committed = writer.write(2, f"more{round_}")
                waited = seen_after(client, ids[-1], committed, timeout_s=10)
                assert waited <= BOUND_S, f"commit {round_} was seen after {waited:.2f} s"
                assert search_finds(client, ids[0])
            assert client.get("/health").json()["documents"] == 11
    finally:
        writer.close()


@pytest.mark.parametrize("refresh_s", ["0"])
def test_the_refresh_interval_is_a_setting(tmp_path: Path, tiny_clip_dir: Path, refresh_s: str) -> None:
    # 0: every read looks for a newer version, so a commit is visible to the next request.
    uri = tmp_path / "lancedb"
    env = server_env(uri, tmp_path / "media", tiny_clip_dir, MEDIASEARCH_INDEX_REFRESH_S=refresh_s)
    writer = Writer(str(uri), "media", TINY_CLIP_DIM, env)
    try:
        writer.write(3, "seed")
        with server(free_port(), env, tmp_path / "server.log") as client:
            assert client.get("/health").json()["documents"] == 3
            ids, _ = writer.write(1, "next")
            assert search_finds(client, ids[0])  # the very next request, no polling
            assert client.get("/health").json()["documents"] == 4
    finally:
        writer.close()
