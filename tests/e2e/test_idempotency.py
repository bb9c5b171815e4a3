"""Idempotent retries: the same Idempotency-Key and body replay the first answer and store nothing new."""

from support import CORPORA, assert_error, make_png

PHOTO = (CORPORA / "exif/metadata-extractor-images/jpg/Olympus PEN E-P3.jpg").read_bytes()


def test_same_key_same_body_replays_the_first_answer(server):
    headers = {"Idempotency-Key": "retry-me-1"}
    first = server.upload(PHOTO, headers=headers)
    assert first.status_code == 201, first.text
    assert first.headers.get("Idempotent-Replayed", "false") != "true"
    second = server.upload(PHOTO, headers=headers)
    assert second.status_code == 201, second.text
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.json() == first.json()
    image_id = first.json()["id"]
    assert server.scalar("SELECT count(*) FROM images") == "1"
    assert server.scalar(f"SELECT count(*) FROM images WHERE id = '{image_id}'") == "1"
    server.wait_processed(image_id)
    originals = [p for p in server.blob_files() if p.name == "original"]
    assert len(originals) == 1, originals

    # Same key, different body: a conflict, and nothing stored.
    other = server.upload(make_png(40, 30, 7), headers=headers)
    assert_error(other, 409, "conflict")
    assert server.scalar("SELECT count(*) FROM images") == "1"

    # The same key from another API key is another namespace: a new image.
    uploader = server.create_key("uploader", name="second-client")
    third = server.upload(PHOTO, key=uploader, headers=headers)
    assert third.status_code == 201, third.text
    assert third.headers.get("Idempotent-Replayed", "false") != "true"
    assert third.json()["id"] != image_id
    assert server.scalar("SELECT count(*) FROM images") == "2"

    # Without a key, the same body is simply another upload.
    assert server.upload(PHOTO).status_code == 201
    assert server.scalar("SELECT count(*) FROM images") == "3"


def test_replay_survives_a_restart(start_server):
    server = start_server()
    headers = {"Idempotency-Key": "across-restart"}
    first = server.upload(PHOTO, headers=headers)
    assert first.status_code == 201
    assert server.stop() == 0
    server = start_server(data_dir=server.data_dir, admin_key=server.admin_key)
    again = server.upload(PHOTO, headers=headers)
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert server.scalar("SELECT count(*) FROM images") == "1"


def test_bad_idempotency_keys_are_400(server):
    for bad in ("x" * 256, "tab\there"):
        r = server.upload(PHOTO, headers={"Idempotency-Key": bad})
        assert_error(r, 400, "invalid_argument")
    assert server.scalar("SELECT count(*) FROM images") == "0"
