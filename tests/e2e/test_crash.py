"""Crash safety: SIGKILL the server at random moments while clients upload and retry with their Idempotency-Key.
Every upload answered 201 must be there after the crashes and get processed; no duplicate rows."""

import os
import random
import threading
import time

import pytest
import requests

from support import make_png, sha256

UPLOADS = 60
CLIENTS = 3
KILLS = 4
CLIENT_DEADLINE = 300   # seconds for all clients to get their 201s across the restarts: a hang detector


class Target:
    """The current server address; changes at each restart (port 0)."""

    def __init__(self, base):
        self.lock = threading.Lock()
        self.base = base

    def get(self):
        with self.lock:
            return self.base

    def set(self, base):
        with self.lock:
            self.base = base


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged(start_server):
    seed = int(os.environ.get("IMGPIPE_CRASH_SEED", random.randrange(1 << 30)))
    print(f"\ncrash test seed {seed} (IMGPIPE_CRASH_SEED reproduces the kill points)")
    rng = random.Random(seed)
    server = start_server()
    key = server.create_key("uploader", name="crash-client")
    images = [(f"crash-{i}", make_png(160 + i % 7, 120, i)) for i in range(UPLOADS)]
    target = Target(server.base)
    acknowledged = {}            # idempotency key -> 201 body
    unexpected = []              # answers that must never happen (500, 409, ...)
    done = threading.Lock()

    def client(batch):
        session = requests.Session()
        for idem, data in batch:
            give_up = time.monotonic() + CLIENT_DEADLINE
            while time.monotonic() < give_up:
                try:
                    r = session.post(target.get() + "/v1/images", data=data, timeout=30,
                                     headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem})
                except requests.RequestException:
                    session = requests.Session()
                    time.sleep(0.05)
                    continue
                if r.status_code == 201:
                    with done:
                        acknowledged[idem] = r.json()
                    break
                if r.status_code != 503:
                    unexpected.append(f"{idem}: {r.status_code} {r.text[:200]}")
                time.sleep(0.05)

    batches = [images[i::CLIENTS] for i in range(CLIENTS)]
    threads = [threading.Thread(target=client, args=(b,), daemon=True) for b in batches]
    for t in threads:
        t.start()

    # Kill when the clients have got given numbers of answers, so every kill lands among the uploads (and among
    # the processing jobs they started).
    for threshold in sorted(rng.sample(range(3, UPLOADS - 3), KILLS)):
        while len(acknowledged) < threshold and any(t.is_alive() for t in threads):
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        server.kill()
        server = start_server(data_dir=server.data_dir, admin_key=server.admin_key)
        target.set(server.base)

    for t in threads:
        t.join(CLIENT_DEADLINE)
    assert not any(t.is_alive() for t in threads), "clients still retrying"
    assert not unexpected, "\n".join(unexpected)
    assert len(acknowledged) == UPLOADS

    ids = {body["id"] for body in acknowledged.values()}
    assert len(ids) == UPLOADS, "two idempotency keys got the same id"
    for idem, data in images:
        body = acknowledged[idem]
        assert body["sha256"] == sha256(data), f"{idem}: answered with another image's sha256"
        image = server.wait_processed(body["id"])
        assert image["sha256"] == sha256(data)
        original = server.get(f"/v1/images/{body['id']}/original")
        assert original.status_code == 200 and sha256(original.content) == sha256(data), idem

    assert server.scalar("SELECT count(*) FROM images") == str(UPLOADS), "duplicate or extra rows"
    assert server.scalar("SELECT count(DISTINCT sha256) FROM images") == str(UPLOADS)
    # No duplicate objects either: a kill between writing an original and committing its row must not leave the
    # blob behind for ever (no row points at it, so retention would never delete it).
    stored = {p.parent.name for p in server.blob_files() if p.name == "original"}
    assert stored == ids, f"originals without a row: {sorted(stored - ids)}; rows without an original: " \
                          f"{sorted(ids - stored)}"
