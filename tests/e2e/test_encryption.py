"""Encryption at rest (docs/ENCRYPTION.md) through the real server and CLI.

- no plaintext at rest: after uploading the valid and EXIF corpora (JPEG, PNG, WebP), the stored bytes of every blob
  start with the envelope magic and contain no image signature and none of the files' EXIF camera strings; the
  SQLite warehouse (SQLCipher) and its WAL hold no SQLite header and none of those strings either;
- the warehouse's key: another keyring, or another database's key file, is refused with a clear error;
- KEK rotation with uploads running: rotate, rewrap while a client keeps uploading, retire the old version; every
  image reads back identical;
- fail closed with an HSM (SoftHSM2 token through PKCS#11): token taken away, uploads get 503 and nothing is
  written, /readyz says why; token back, everything works again."""

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import CORPORA, IMGPIPE_BIN, assert_error, child_env, disrupting_service, run_cli, sha256

MAGIC = b"\x89IPENC\r\n"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}
# Long enough that 100 MB of ciphertext cannot contain one by chance (2^-48 per position and string).
SIGNATURES = [b"\x89PNG\r\n\x1a\n", b"WEBPVP8", b"JFIF\x00\x01", b"Exif\x00\x00"]


def corpus_images():
    files = []
    for folder in ("valid", "exif"):
        files += [p for p in sorted((CORPORA / folder).rglob("*"))
                  if p.is_file() and p.suffix.lower() in EXTENSIONS and "LICENSES" not in p.parts]
    return files


def exif_strings(paths):
    """Camera make and model (and software) strings exiftool finds in the files, at least 6 bytes long."""
    out = subprocess.run(["exiftool", "-j", "-q", "-Make", "-Model", "-Software", *map(str, paths)],
                         capture_output=True, timeout=300)
    found = set()
    for record in json.loads(out.stdout or b"[]"):
        for field in ("Make", "Model", "Software"):
            value = str(record.get(field, "")).strip()
            if len(value.encode()) >= 6:
                found.add(value.encode())
    return found


def upload_many(server, paths):
    def one(path):
        r = server.upload(path.read_bytes())
        return path, r.status_code, (r.json() if r.headers.get("Content-Type", "").startswith("application/json")
                                     else {})
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, paths))


def settle(server, ids, timeout=600):
    deadline = time.monotonic() + timeout
    for image_id in ids:
        while True:
            status = server.get(f"/v1/images/{image_id}").json()["status"]
            if status in ("processed", "failed"):
                break
            assert time.monotonic() < deadline, f"{image_id} still {status}"
            time.sleep(0.1)


def kek(server, *args, env=None):
    p = run_cli("kek", *args, "--data-dir", server.data_dir, env=env)
    assert p.returncode == 0, f"kek {' '.join(args)}: exit {p.returncode}: {p.stderr.decode()[-800:]}"
    return p.stdout.decode()


@pytest.mark.slow
def test_nothing_is_stored_in_plaintext(server):
    paths = corpus_images()
    assert len(paths) > 50, "the corpora look empty"
    results = upload_many(server, paths)
    accepted = [(p, body["id"]) for p, status, body in results if status == 201]
    assert len(accepted) > 50
    settle(server, [i for _, i in accepted])
    secrets = exif_strings([p for p, _ in accepted])
    assert len(secrets) >= 10, f"exiftool found only {secrets}"
    heads = {p.read_bytes()[:16] for p, _ in accepted}

    blobs = [p for p in server.blob_files() if ".tmp" not in p.parts]
    originals = [p for p in blobs if p.name == "original"]
    assert len(originals) == len(accepted)
    assert len(blobs) > len(originals), "no renditions were stored"
    for blob in blobs:
        raw = blob.read_bytes()
        assert raw.startswith(MAGIC), f"{blob} is not encrypted"
        for needle in [*SIGNATURES, *heads, *secrets]:
            assert needle not in raw, f"{blob} contains {needle[:20]!r} in the clear"
    assert server.spool_files() == [], "plaintext left in the spool"

    # The warehouse holds the EXIF strings as metadata rows (extract-metadata): its file and WAL, read while serve
    # runs, show neither them nor SQLite's header.
    db_files = [server.data_dir / name for name in ("imgpipe.db", "imgpipe.db-wal")]
    assert all(f.exists() for f in db_files), sorted(p.name for p in server.data_dir.iterdir())
    rows_with_make = int(server.scalar("SELECT count(*) FROM images WHERE exif_make IS NOT NULL"))
    assert rows_with_make > 0, "no camera make was recorded, so the database check below proves nothing"
    for f in db_files:
        raw = f.read_bytes()
        assert len(raw) > 4096, f
        assert b"SQLite format 3" not in raw, f"{f.name} is not encrypted"
        for needle in [*secrets, b"CREATE TABLE", b"exif_make"]:
            assert needle not in raw, f"{f.name} contains {needle[:20]!r} in the clear"

    # And it all reads back as uploaded.
    for path, image_id in accepted[:40]:
        r = server.get(f"/v1/images/{image_id}/original")
        assert r.status_code == 200
        assert sha256(r.content) == sha256(path.read_bytes()), path


def test_rotate_rewrap_retire_while_uploading(server):
    paths = [p for p in corpus_images() if p.suffix.lower() in (".jpg", ".jpeg")][:20]
    expected = {}
    for path in paths:
        expected[server.upload_ok(path.read_bytes())["id"]] = path.read_bytes()
    settle(server, list(expected))
    assert "1" in kek(server, "list")
    usage = json.loads(kek(server, "usage"))
    assert set(usage["by_version"]) == {"1"} and usage["plaintext"] == 0

    assert kek(server, "rotate").strip() == "2"
    time.sleep(1.5)  # running servers re-read the keyring at most once a second

    stop = threading.Event()
    during = {}
    errors = []

    def keep_uploading():
        i = 0
        while not stop.is_set():
            data = paths[i % len(paths)].read_bytes()
            r = server.upload(data)
            if r.status_code == 201:
                during[r.json()["id"]] = data
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")
            i += 1

    uploader = threading.Thread(target=keep_uploading)
    uploader.start()
    try:
        report = json.loads(kek(server, "rewrap"))
    finally:
        stop.set()
        uploader.join()
    assert errors == []
    assert report["rewrapped"] >= len(expected), report
    assert report["unreadable"] == 0
    settle(server, list(during))

    # Retiring the current version is refused; the old one is free now.
    p = run_cli("kek", "retire", "2", "--data-dir", server.data_dir)
    assert p.returncode != 0
    kek(server, "retire", "1")
    usage = json.loads(kek(server, "usage"))
    assert set(usage["by_version"]) == {"2"}, usage
    versions = kek(server, "list")
    assert "\n1 " not in versions and "2" in versions

    # Every image, old and new, reads back identical through a server that never cached the old keys.
    assert server.stop() == 0
    server.start()
    for image_id, data in {**expected, **during}.items():
        r = server.get(f"/v1/images/{image_id}/original")
        assert r.status_code == 200, f"{image_id}: {r.status_code} {r.text[:200]}"
        assert sha256(r.content) == sha256(data)
        thumb = server.get(f"/v1/images/{image_id}/renditions/thumb-256")
        assert thumb.status_code == 200
    # Ranged reads decrypt only the segments they need and still match.
    image_id, data = max(expected.items(), key=lambda item: len(item[1]))
    assert len(data) > 3 * 65536
    r = server.get(f"/v1/images/{image_id}/original", headers={"Range": "bytes=65530-65545"})
    assert r.status_code == 206
    assert r.content == data[65530:65546]
    r = server.get(f"/v1/images/{image_id}/original", headers={"Range": f"bytes=131000-{len(data) - 1}"})
    assert r.status_code == 206
    assert r.content == data[131000:]


def pkcs11_env():
    need = ["IMGPIPE_TEST_PKCS11_MODULE", "IMGPIPE_TEST_PKCS11_TOKEN", "IMGPIPE_TEST_PKCS11_PIN",
            "IMGPIPE_TEST_PKCS11_TOKEN_DIR", "SOFTHSM2_CONF"]
    if not all(os.environ.get(n) for n in need):
        if os.environ.get("IMGPIPE_REQUIRE_SOFTHSM"):
            pytest.fail("SoftHSM2 is required: scripts/services/softhsm start, then export softhsm.env")
        pytest.skip("no SoftHSM2 token (scripts/services/softhsm start)")
    return {
        "SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"],
        "IMGPIPE_ENCRYPTION_PROVIDER": "pkcs11",
        "IMGPIPE_ENCRYPTION_PKCS11_MODULE": os.environ["IMGPIPE_TEST_PKCS11_MODULE"],
        "IMGPIPE_ENCRYPTION_PKCS11_TOKEN": os.environ["IMGPIPE_TEST_PKCS11_TOKEN"],
        "IMGPIPE_ENCRYPTION_PKCS11_PIN": os.environ["IMGPIPE_TEST_PKCS11_PIN"],
        # Each test its own KEK family on the run's token.
        "IMGPIPE_ENCRYPTION_PKCS11_KEY_LABEL": "e2e-" + os.urandom(4).hex(),
    }


@pytest.mark.disrupts_services
def test_hsm_token_away_fails_closed_and_recovers(start_server):
    env = pkcs11_env()
    disrupting_service("softhsm")  # the run's one token goes away for every process that uses it
    token_dir = Path(os.environ["IMGPIPE_TEST_PKCS11_TOKEN_DIR"])
    server = start_server(env=env)
    photo = corpus_images()[0].read_bytes()
    before = server.upload_ok(photo)["id"]
    server.wait_processed(before)
    blobs_before = server.blob_files()
    images_before = server.scalar("SELECT count(*) FROM images")

    away = token_dir.with_name(token_dir.name + ".away")
    token_dir.rename(away)
    try:
        r = server.upload(photo)
        assert_error(r, 503, "unavailable")
        ready = server.get("/readyz", key=False)
        assert ready.status_code == 503
        assert "key provider" in ready.json()["checks"]["storage"], ready.json()
        assert server.blob_files() == blobs_before, "something was written while the vault was away"
        assert server.spool_files() == []
    finally:
        away.rename(token_dir)
    # (Counted now: the CLI needs the token too, to unwrap the warehouse's key.)
    assert server.scalar("SELECT count(*) FROM images") == images_before, "a refused upload left a row"

    deadline = time.monotonic() + 30
    while server.get("/readyz", key=False).status_code != 200:
        assert time.monotonic() < deadline, "not ready after the token came back"
        time.sleep(0.1)
    after = server.upload_ok(photo)["id"]
    server.wait_processed(after)
    for image_id in (before, after):
        r = server.get(f"/v1/images/{image_id}/original")
        assert r.status_code == 200 and r.content == photo
    # The CLI talks to the same token.
    assert json.loads(kek(server, "usage", env=env))["by_version"] == {"1": len(server.blob_files())}

    # The warehouse's key is wrapped on the token too: with the token away at start, serve cannot open the
    # warehouse and refuses to start, naming the provider (it never becomes ready); back, it starts as before.
    assert server.stop() == 0
    token_dir.rename(away)
    try:
        p = subprocess.run([str(IMGPIPE_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(server.data_dir)],
                           env=child_env(env), capture_output=True, timeout=60)
        assert p.returncode != 0
        assert b"cannot open the database" in p.stderr and b"pkcs11" in p.stderr.lower(), p.stderr.decode()[-800:]
    finally:
        away.rename(token_dir)
    server.start()
    r = server.get(f"/v1/images/{after}/original")
    assert r.status_code == 200 and r.content == photo


def test_warehouse_opens_only_with_its_own_key(server, tmp_path):
    image_id = server.upload_ok(corpus_images()[0].read_bytes())["id"]
    server.wait_processed(image_id)
    assert server.stop() == 0
    query = ["query", "--data-dir", server.data_dir, "SELECT count(*) FROM images"]
    assert run_cli(*query).returncode == 0

    # Another keyring (a restore with the wrong keyring file): the key file does not unwrap.
    p = run_cli(*query, env={"IMGPIPE_ENCRYPTION_KEYRING": str(tmp_path / "other-keyring.json")})
    assert p.returncode != 0
    assert b"does not open under the local key provider" in p.stderr, p.stderr.decode()

    # Another database's key file (same keyring): it unwraps, to a key that does not open this database.
    other = tmp_path / "other-data"
    other.mkdir()
    (other / "keyring.json").write_bytes((server.data_dir / "keyring.json").read_bytes())
    (other / "keyring.json").chmod(0o600)
    assert run_cli("query", "--data-dir", other, "SELECT 1").returncode == 0
    key_file = server.data_dir / "imgpipe.db.key"
    own = key_file.read_bytes()
    key_file.write_bytes((other / "imgpipe.db.key").read_bytes())
    p = run_cli(*query)
    assert p.returncode != 0
    assert b"does not open under" in p.stderr or b"does not open with the warehouse key" in p.stderr, p.stderr
    key_file.write_bytes(own)

    # Without its key file the database is refused, never re-keyed.
    key_file.rename(tmp_path / "saved.key")
    p = run_cli(*query)
    assert p.returncode != 0 and b"imgpipe.db.key is missing" in p.stderr, p.stderr.decode()
    assert not key_file.exists()
    (tmp_path / "saved.key").rename(key_file)

    # With encryption off the file is refused as encrypted, not read as garbage.
    p = run_cli(*query, env={"IMGPIPE_DATABASE_ENCRYPT": "false"})
    assert p.returncode != 0 and b"is encrypted" in p.stderr, p.stderr.decode()
    server.start()
    r = server.get(f"/v1/images/{image_id}")
    assert r.status_code == 200 and r.json()["status"] == "processed"


def test_plaintext_warehouse_is_refused_then_encrypted_in_place(start_server, tmp_path):
    data = tmp_path / "data"
    plain = start_server(env={"IMGPIPE_DATABASE_ENCRYPT": "false"}, data_dir=data)
    photo = corpus_images()[0].read_bytes()
    image_id = plain.upload_ok(photo)["id"]
    plain.wait_processed(image_id)
    assert plain.stop() == 0
    assert (data / "imgpipe.db").read_bytes()[:16] == b"SQLite format 3\x00"

    p = subprocess.run([str(IMGPIPE_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                       env=child_env(), capture_output=True, timeout=60)
    assert p.returncode != 0
    assert b"imgpipe db encrypt" in p.stderr, p.stderr.decode()[-800:]

    p = run_cli("db", "encrypt", "--data-dir", data)
    assert p.returncode == 0, p.stderr.decode()
    raw = (data / "imgpipe.db").read_bytes()
    assert b"SQLite format 3" not in raw and b"CREATE TABLE" not in raw
    assert not (data / "imgpipe.db.encrypting").exists()
    server = start_server(data_dir=data, admin_key=plain.admin_key)
    r = server.get(f"/v1/images/{image_id}/original")
    assert r.status_code == 200 and r.content == photo

    # A backup while serve runs: encrypted with the same key, and it opens as a data folder of its own.
    copy = tmp_path / "restored"
    copy.mkdir()
    p = run_cli("db", "backup", copy / "imgpipe.db", "--data-dir", data)
    assert p.returncode == 0, p.stderr.decode()
    assert b"SQLite format 3" not in (copy / "imgpipe.db").read_bytes()
    for name in ("imgpipe.db.key", "keyring.json"):
        (copy / name).write_bytes((data / name).read_bytes())
        (copy / name).chmod(0o600)
    p = run_cli("query", "--data-dir", copy, "--format", "csv", "SELECT id FROM images")
    assert p.returncode == 0, p.stderr.decode()
    assert image_id in p.stdout.decode()
