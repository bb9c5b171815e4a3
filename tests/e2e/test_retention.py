"""Seven-day retention: expired images are unreadable at once, and a sweep deletes their blobs but keeps the row."""

import json
from datetime import datetime, timedelta, timezone

from support import CORPORA, assert_error, run_cli

PHOTO = (CORPORA / "exif/metadata-extractor-images/jpg/Olympus PEN E-P3.jpg").read_bytes()


def rfc3339(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def received_at(created):
    return datetime.fromisoformat(created["received_at"].replace("Z", "+00:00"))


def upload_processed(start_server):
    server = start_server()
    created = server.upload_ok(PHOTO)
    server.wait_processed(created["id"])
    assert server.stop() == 0
    return server, created


def sweep(server, now):
    """`imgpipe retention run --now NOW`: returns (expired, deleted_blobs) from the JSON it prints."""
    p = run_cli("retention", "run", "--data-dir", server.data_dir, "--now", rfc3339(now))
    assert p.returncode == 0, p.stderr.decode()
    report = json.loads(p.stdout)
    return report["expired"], report["deleted_blobs"]


def blobs_of(server, image_id):
    return [p for p in server.blob_files() if image_id in p.as_posix()]


def readable_paths(image_id):
    return [f"/v1/images/{image_id}", f"/v1/images/{image_id}/original",
            f"/v1/images/{image_id}/renditions/thumb-256"]


def test_expired_image_is_unreadable_before_any_sweep(start_server):
    first, created = upload_processed(start_server)
    image_id = created["id"]

    # Six days later: still kept.
    server = start_server(data_dir=first.data_dir, admin_key=first.admin_key,
                          env={"IMGPIPE_TESTING_CLOCK_OFFSET": "6d"})
    for path in readable_paths(image_id):
        assert server.get(path).status_code == 200, path
    assert server.stop() == 0

    # Eight days later: gone from the API at once, whether or not a sweep has run.
    server = start_server(data_dir=first.data_dir, admin_key=first.admin_key,
                          env={"IMGPIPE_TESTING_CLOCK_OFFSET": "8d", "IMGPIPE_RETENTION_SWEEP_INTERVAL": "30d"})
    for path in readable_paths(image_id):
        assert_error(server.get(path), 404, "not_found")
    assert image_id not in [it["id"] for it in server.get("/v1/images").json()["items"]]
    assert server.stop() == 0

    # The row stays, whether or not that server's sweeper ran.
    assert server.scalar(f"SELECT count(*) FROM images WHERE id = '{image_id}'") == "1"


def test_retention_run_expires_and_deletes_blobs(start_server):
    server, created = upload_processed(start_server)
    image_id = created["id"]
    assert len(blobs_of(server, image_id)) == 3, "original and two renditions"
    t0 = received_at(created)

    assert sweep(server, t0 + timedelta(days=6)) == (0, 0)
    assert len(blobs_of(server, image_id)) == 3
    assert server.scalar(f"SELECT status FROM images WHERE id = '{image_id}'") == "processed"

    assert sweep(server, t0 + timedelta(days=8)) == (1, 3)
    assert blobs_of(server, image_id) == []
    rows = server.query_rows(f"SELECT status, expired_at FROM images WHERE id = '{image_id}'")
    assert len(rows) == 1, "the row must stay after expiry"
    assert rows[0]["status"] == "expired"
    assert rows[0]["expired_at"] not in ("", "NULL", None)

    # A second sweep finds nothing more to do.
    assert sweep(server, t0 + timedelta(days=9)) == (0, 0)

    # And the running server, on the real clock, answers 404 for it.
    again = start_server(data_dir=server.data_dir, admin_key=server.admin_key)
    for path in readable_paths(image_id):
        assert_error(again.get(path), 404, "not_found")


def test_legal_hold_keeps_an_image_past_retention_until_released(start_server):
    first, created = upload_processed(start_server)
    image_id = created["id"]
    t0 = received_at(created)
    server = start_server(data_dir=first.data_dir, admin_key=first.admin_key)
    hold_path = f"/v1/images/{image_id}/hold"

    # A reason is required; then the hold shows on the image and in the list.
    assert_error(server.request("PUT", hold_path, json={}), 400, "invalid_argument")
    r = server.request("PUT", hold_path, json={"reason": "litigation 2026-17"})
    assert r.status_code == 200, r.text
    assert r.json()["reason"] == "litigation 2026-17"
    admin_key_id = r.headers["X-Imgpipe-Key-Id"]
    assert r.json()["held_by"] == admin_key_id
    assert server.get(f"/v1/images/{image_id}").json()["legal_hold"]["reason"] == "litigation 2026-17"
    assert [h["image_id"] for h in server.get("/v1/holds").json()["items"]] == [image_id]
    # Held: an admin cannot delete it.
    assert_error(server.request("DELETE", f"/v1/images/{image_id}"), 409, "conflict")
    # Only admins manage holds.
    reader = server.create_key("reader")
    assert_error(server.request("PUT", hold_path, json={"reason": "x"}, key=reader), 403, "permission_denied")
    assert server.stop() == 0

    # Past retention: still readable, and a sweep keeps every blob.
    server = start_server(data_dir=first.data_dir, admin_key=first.admin_key,
                          env={"IMGPIPE_TESTING_CLOCK_OFFSET": "9d", "IMGPIPE_RETENTION_SWEEP_INTERVAL": "30d"})
    for path in readable_paths(image_id):
        assert server.get(path).status_code == 200, path
    assert server.stop() == 0
    assert sweep(server, t0 + timedelta(days=9)) == (0, 0)
    assert len(blobs_of(server, image_id)) == 3
    assert server.scalar(f"SELECT blob_state FROM images_with_blob_state WHERE id = '{image_id}'") == "held"

    # Released from the CLI: the next sweep deletes it, and the purge log says what, when and why.
    p = run_cli("hold", "release", image_id, "--data-dir", server.data_dir)
    assert p.returncode == 0, p.stderr.decode()
    assert sweep(server, t0 + timedelta(days=9)) == (1, 3)
    assert blobs_of(server, image_id) == []
    rows = server.query_rows("SELECT what, reason, actor, objects, finished_at IS NOT NULL AS finished FROM purges "
                             f"WHERE image_id = '{image_id}'")
    assert rows == [{"what": "image", "reason": "retention", "actor": "retention", "objects": "3", "finished": "1"}]
    rows = server.query_rows(f"SELECT held_by, released_by FROM legal_holds WHERE image_id = '{image_id}'")
    assert rows == [{"held_by": admin_key_id, "released_by": "cli"}]
