"""The audit log: every authenticated action once, with who, what, from where and the outcome; tampering is found
by `imgpipe audit verify`."""

from collections import Counter

from support import CORPORA, assert_error, run_cli

PHOTO = (CORPORA / "exif/metadata-extractor-images/jpg/Olympus PEN E-P3.jpg").read_bytes()


def audit(server, **params):
    r = server.get("/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_every_audited_action_is_recorded_once_and_tampering_is_detected(start_server):
    server = start_server()
    kept = server.upload_ok(PHOTO)["id"]
    doomed = server.upload_ok(PHOTO + b"\0")["id"]
    server.wait_processed(kept)
    assert server.get(f"/v1/images/{kept}/original").status_code == 200
    assert server.get(f"/v1/images/{kept}").status_code == 200  # a metadata read: not audited
    assert server.request("DELETE", f"/v1/images/{doomed}").status_code == 204
    assert server.request("POST", "/v1/query", json={"sql": "SELECT count(*) AS n FROM images"}).status_code == 200
    created = server.request("POST", "/v1/keys", json={"role": "reader", "name": "audited"})
    assert created.status_code == 201
    new_key_id = created.json()["id"]
    assert server.request("DELETE", f"/v1/keys/{new_key_id}").status_code == 204
    assert server.request("PUT", f"/v1/images/{kept}/hold", json={"reason": "audit test"}).status_code == 200
    assert server.request("DELETE", f"/v1/images/{kept}/hold").status_code == 204
    # A refused attempt is recorded too, with its status.
    reader = server.create_key("reader")
    assert_error(server.request("DELETE", f"/v1/images/{kept}", key=reader), 403, "permission_denied")

    items = audit(server)
    admin_id = created.headers["X-Imgpipe-Key-Id"]
    done = Counter(item["action"] for item in items if item["outcome"] == "ok")
    for action in ("image.read_original", "image.delete", "query", "key.revoke", "hold.set", "hold.release"):
        assert done[action] == 1, (action, done)
    assert done["image.upload"] == 2
    # key.create: the API call above, and `imgpipe keys create` for the reader (from the command line).
    assert sorted(i["actor"] for i in items if i["action"] == "key.create") == sorted([admin_id, "cli"])

    def one(action):
        return next(i for i in items if i["action"] == action and i["outcome"] == "ok")

    assert one("image.delete")["target"] == doomed
    assert one("image.delete")["actor"] == admin_id
    assert one("image.delete")["remote"] == "127.0.0.1"
    assert one("image.delete")["outcome"] == "ok"
    assert one("query")["details"]["sql"] == "SELECT count(*) AS n FROM images"
    assert one("key.revoke")["target"] == new_key_id
    assert {i["target"] for i in items if i["action"] == "image.upload"} == {kept, doomed}
    refused = [i for i in items if i["action"] == "image.delete" and i["outcome"] != "ok"]
    assert [(r["outcome"], r["target"]) for r in refused] == [("403", kept)]
    # Newest first, and a chain: each record names the one before it.
    seqs = [i["seq"] for i in items]
    assert seqs == sorted(seqs, reverse=True)
    assert audit(server, action="query", limit=5)[0]["action"] == "query"
    # Only admins read it.
    assert_error(server.get("/v1/audit", key=reader), 403, "permission_denied")

    # From the command line, beside the running server: one chain.
    p = run_cli("hold", "set", kept, "--reason", "from the CLI", "--data-dir", server.data_dir)
    assert p.returncode == 0, p.stderr.decode()
    assert audit(server, action="hold.set", actor="cli")[0]["target"] == kept
    assert server.stop() == 0

    p = run_cli("audit", "verify", "--data-dir", server.data_dir)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().startswith("ok: ")

    # Edit one line (the query's text): verify fails and names the file and line.
    [log_file] = sorted((server.data_dir / "audit").glob("*.jsonl"))
    lines = log_file.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if "SELECT count(*) AS n FROM images" in line)
    lines[n] = lines[n].replace("count(*) AS n", "count(*) AS m")
    log_file.write_text("".join(lines))
    p = run_cli("audit", "verify", "--data-dir", server.data_dir)
    assert p.returncode == 1
    assert f"{log_file.name}:{n + 1}: record" in p.stderr.decode(), p.stderr.decode()
