"""Backup and restore: `imgpipe backup` while uploads go on, the data folder wiped, `imgpipe restore` into it, and
`serve` started again: every image and row back, originals byte-identical, renditions served, the legal hold kept.
A wrong passphrase, a tampered blob and a non-empty target are refused, and nothing is written then."""

import json
import shutil
import threading

from support import CORPORA, run_cli

SAMPLE = [
    "exif/metadata-extractor-images/jpg/Olympus PEN E-P3.jpg",
    "valid/kodak/kodim01.png",
    "valid/kodak/kodim02.png",
    "valid/libjpeg-turbo-testimages/testorig.jpg",
]
PASSPHRASE = "a long passphrase for the test keyring"
ROWS = "SELECT id, sha256, bytes, status, width, height FROM images ORDER BY id"


def restore(backup, data_dir, passfile):
    return run_cli("restore", "--from", backup, "--data-dir", data_dir, "--passphrase-file", passfile)


def test_backup_while_uploading_then_wipe_and_restore(start_server, tmp_path):
    server = start_server()
    uploaded = {}
    for path in SAMPLE:
        data = (CORPORA / path).read_bytes()
        uploaded[server.upload_ok(data)["id"]] = data
    for image_id in uploaded:
        server.wait_processed(image_id)
    held = next(iter(uploaded))
    r = server.request("PUT", f"/v1/images/{held}/hold", json={"reason": "litigation"})
    assert r.status_code == 200, r.text
    rows_before = [row for row in server.query_rows(ROWS) if row["id"] in uploaded]

    # Uploads keep coming while the backup runs.
    photo = (CORPORA / SAMPLE[-1]).read_bytes()
    during, stop, first_done = {}, threading.Event(), threading.Event()

    def keep_uploading():
        n = 0
        while not stop.is_set():
            n += 1
            data = photo + n.to_bytes(4, "big")  # trailing bytes: a distinct original each time
            r = server.upload(data)
            assert r.status_code == 201, r.text
            during[r.json()["id"]] = data
            first_done.set()

    uploader = threading.Thread(target=keep_uploading)
    uploader.start()
    try:
        assert first_done.wait(60), "no upload went through"
        passfile = tmp_path / "passphrase"
        passfile.write_text(PASSPHRASE + "\n")
        backup = tmp_path / "backup"
        p = run_cli("backup", "--to", backup, "--data-dir", server.data_dir, "--passphrase-file", passfile)
    finally:
        stop.set()
        uploader.join()
    assert p.returncode == 0, p.stderr.decode()
    report = json.loads(p.stdout)
    assert report["blobs_included"] and report["keyring"] and report["database"] == "sqlite"
    assert report["blobs"] >= 3 * len(uploaded)  # an original and two renditions each
    manifest = json.loads((backup / "manifest.json").read_text())
    assert PASSPHRASE not in (backup / "keyring.sealed").read_text()
    assert "keys" not in json.loads((backup / "keyring.sealed").read_text())
    key = server.admin_key
    assert server.stop() == 0

    # A non-empty target is refused.
    p = restore(backup, server.data_dir, passfile)
    assert p.returncode == 1 and b"is not empty" in p.stderr, p.stderr

    # A wrong passphrase is refused and writes nothing.
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase at all\n")
    p = restore(backup, tmp_path / "elsewhere", wrong)
    assert p.returncode == 1 and b"passphrase is wrong" in p.stderr, p.stderr
    assert not (tmp_path / "elsewhere" / "imgpipe.db").exists()

    # One byte changed in one blob of a copy of the backup: detected before anything is restored.
    tampered = tmp_path / "tampered"
    shutil.copytree(backup, tampered)
    victim = next(b for b in manifest["blobs"] if b["container"] == "originals")
    victim_path = tampered / "blobs" / victim["container"] / victim["key"]
    data = bytearray(victim_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim_path.write_bytes(bytes(data))
    p = restore(tampered, tmp_path / "from-tampered", passfile)
    assert p.returncode == 1, p.stderr
    assert b"does not match the backup's manifest" in p.stderr and victim["key"].encode() in p.stderr, p.stderr
    assert not (tmp_path / "from-tampered" / "imgpipe.db").exists()

    # Wipe, restore, start.
    shutil.rmtree(server.data_dir)
    p = restore(backup, server.data_dir, passfile)
    assert p.returncode == 0, p.stderr.decode()
    restored = start_server(data_dir=server.data_dir, admin_key=key)
    assert [row for row in restored.query_rows(ROWS) if row["id"] in uploaded] == rows_before
    for image_id, data in uploaded.items():
        assert restored.get(f"/v1/images/{image_id}/original").content == data
        body = restored.get(f"/v1/images/{image_id}").json()
        assert body["status"] == "processed"
        for rendition in body["renditions"]:
            name = rendition["name"]
            r = restored.get(f"/v1/images/{image_id}/renditions/{name}")
            assert r.status_code == 200 and len(r.content) > 100, (image_id, name, r.status_code)
    assert [h["image_id"] for h in restored.get("/v1/holds").json()["items"]] == [held]
    # Uploads that made it into the snapshot came with their originals: no row without its blob.
    in_backup = {row["id"] for row in restored.query_rows("SELECT id FROM images")} & set(during)
    for image_id in in_backup:
        assert restored.get(f"/v1/images/{image_id}/original").content == during[image_id]
    # The restored server takes new uploads with the restored keyring.
    new = restored.upload_ok(photo + b"after restore")
    restored.wait_processed(new["id"])
