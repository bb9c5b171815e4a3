"""The 401/403 matrix: every endpoint of the contract's table, for each role, no key, a bad key and a revoked key."""

import re
import secrets

import requests

import support
from support import CORPORA, assert_error, key_id_by_name, run_cli

ROLES = ("admin", "uploader", "reader", "analyst")
SMALL_JPEG = (CORPORA / "exif/pillow/exif-ifd-offset.jpg").read_bytes()


class World:
    """A server with one key per role, a processed image, and helpers that make each endpoint's request."""

    def __init__(self, server):
        self.server = server
        self.keys = {"admin": server.admin_key}
        for role in ROLES[1:]:
            self.keys[role] = server.create_key(role, name=f"e2e-{role}")
        self.image_id = server.upload_ok(SMALL_JPEG)["id"]
        server.wait_processed(self.image_id)
        self.key_id = key_id_by_name(server.data_dir, "e2e-reader")

    def endpoints(self):
        """(label, allowed roles, status when allowed, function(key) -> response). Requests that change state use
        a target made for the call when the role may do it, and a real, shared one when it may not (which proves
        the 403 really kept it)."""
        s = self.server
        image = f"/v1/images/{self.image_id}"

        def delete_image(key, allowed):
            target = s.upload_ok(SMALL_JPEG + secrets.token_bytes(8))["id"] if allowed else self.image_id
            return s.request("DELETE", f"/v1/images/{target}", key=key)

        def delete_key(key, allowed):
            if allowed:
                name = "throwaway-" + secrets.token_hex(4)
                s.create_key("reader", name=name)
                target = key_id_by_name(s.data_dir, name)
            else:
                target = self.key_id
            return s.request("DELETE", f"/v1/keys/{target}", key=key)

        def hold_image(key, allowed):
            target = s.upload_ok(SMALL_JPEG + secrets.token_bytes(8))["id"] if allowed else self.image_id
            return s.request("PUT", f"/v1/images/{target}/hold", key=key, json={"reason": "auth matrix"})

        return [
            ("POST /v1/images", {"admin", "uploader"}, 201,
             lambda key, ok: s.upload(SMALL_JPEG + secrets.token_bytes(8), key=key)),
            ("GET /v1/images/{id}", {"admin", "uploader", "reader"}, 200, lambda key, ok: s.get(image, key=key)),
            ("GET /v1/images", {"admin", "reader"}, 200, lambda key, ok: s.get("/v1/images", key=key)),
            ("GET original", {"admin", "reader"}, 200, lambda key, ok: s.get(image + "/original", key=key)),
            ("GET rendition", {"admin", "reader"}, 200,
             lambda key, ok: s.get(image + "/renditions/thumb-256", key=key)),
            ("DELETE /v1/images/{id}", {"admin"}, 204, delete_image),
            ("POST /v1/query", {"admin", "analyst"}, 200,
             lambda key, ok: s.request("POST", "/v1/query", key=key, json={"sql": "SELECT 1 AS one"})),
            ("GET /metrics", {"admin"}, 200, lambda key, ok: s.get("/metrics", key=key)),
            ("POST /v1/keys", {"admin"}, 201,
             lambda key, ok: s.request("POST", "/v1/keys", key=key, json={"role": "reader", "name": "via-api"})),
            ("GET /v1/keys", {"admin"}, 200, lambda key, ok: s.get("/v1/keys", key=key)),
            ("DELETE /v1/keys/{id}", {"admin"}, 204, delete_key),
            ("PUT /v1/images/{id}/hold", {"admin"}, 200, hold_image),
            ("GET /v1/holds", {"admin"}, 200, lambda key, ok: s.get("/v1/holds", key=key)),
            ("GET /v1/audit", {"admin"}, 200, lambda key, ok: s.get("/v1/audit", key=key)),
        ]


def unauthenticated_problem(response, label):
    """None if `response` is the contract's 401 (error JSON, WWW-Authenticate: Bearer), else what is wrong."""
    try:
        assert_error(response, 401, "unauthenticated")
        assert "bearer" in response.headers.get("WWW-Authenticate", "").lower(), "no WWW-Authenticate: Bearer"
    except AssertionError as e:
        return f"{label}: {e}"
    return None


def test_role_matrix(server):
    world = World(server)
    failures = []
    for label, allowed, ok_status, call in world.endpoints():
        for role in ROLES:
            may = role in allowed
            r = call(world.keys[role], may)
            want = ok_status if may else 403
            if r.status_code != want:
                failures.append(f"{label} as {role}: {r.status_code} (want {want}) {r.text[:150]}")
            elif not may:
                assert_error(r, 403, "permission_denied")
    assert not failures, "\n".join(failures)
    # The refused DELETEs left their targets alone.
    assert server.get(f"/v1/images/{world.image_id}").status_code == 200
    assert server.get("/v1/images", key=world.keys["reader"]).status_code == 200


def test_no_key_and_bad_keys_get_401_everywhere(server):
    world = World(server)
    bad = {
        "no key": None,
        "unknown well-formed key": "imgp_" + secrets.token_urlsafe(32)[:43],
        "garbage": "not-a-key",
        "empty": "",
    }
    failures = []
    for label, _, _, call in world.endpoints():
        for what, key in bad.items():
            failures.append(unauthenticated_problem(call(key if key is not None else False, False),
                                                    f"{label} with {what}"))
    # 401 comes before 404 and 405.
    for method, path in (("GET", "/v1/nothing-here"), ("GET", "/"), ("PUT", "/v1/images"), ("GET", "/v1/images/x")):
        failures.append(unauthenticated_problem(server.request(method, path, key=False), f"{method} {path}"))
    # Another scheme is not a bearer key.
    r = requests.get(server.base + "/v1/images", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}, timeout=30)
    failures.append(unauthenticated_problem(r, "Basic auth"))
    failures = [f for f in failures if f]
    assert not failures, "\n".join(failures)
    # Health endpoints need no key.
    for path in ("/livez", "/readyz"):
        assert requests.get(server.base + path, timeout=30).status_code == 200, path


def test_revoked_key_gets_401(server):
    key = server.create_key("admin", name="to-revoke")
    assert server.get("/v1/keys", key=key).status_code == 200
    key_id = key_id_by_name(server.data_dir, "to-revoke")
    p = run_cli("keys", "revoke", key_id, "--data-dir", server.data_dir)
    assert p.returncode == 0, p.stderr.decode()

    listing = run_cli("keys", "list", "--data-dir", server.data_dir).stdout.decode()
    line = next(line for line in listing.splitlines() if "to-revoke" in line)
    assert len(re.findall(r"\d{4}-\d\d-\d\d", line)) == 2, f"keys list shows no revoked_at for it: {line!r}"

    world = World(server)
    failures = []
    for label, _, _, call in world.endpoints():
        failures.append(unauthenticated_problem(call(key, False), f"{label} with a revoked key"))
    failures = [f for f in failures if f]
    assert not failures, "\n".join(failures)
    # Other keys still work.
    assert server.get("/v1/keys").status_code == 200


def test_keys_api_lifecycle(server):
    r = server.request("POST", "/v1/keys", json={"role": "reader", "name": "api-made"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert {"id", "key", "role", "name", "created_at"} <= set(made)
    assert (made["role"], made["name"]) == ("reader", "api-made")
    assert support.KEY_RE.fullmatch(made["key"])
    assert server.get("/v1/images", key=made["key"]).status_code == 200

    items = server.get("/v1/keys").json()["items"]
    mine = [it for it in items if it["id"] == made["id"]]
    assert len(mine) == 1 and mine[0]["revoked_at"] is None
    assert all("key" not in it and "secret_hash" not in it for it in items), "GET /v1/keys leaks secrets"

    for bad in ({"role": "emperor", "name": "x"}, {"name": "no role"}):
        assert_error(server.request("POST", "/v1/keys", json=bad), 400, "invalid_argument")

    assert server.request("DELETE", f"/v1/keys/{made['id']}").status_code == 204
    assert unauthenticated_problem(server.get("/v1/images", key=made["key"]), "deleted key") is None
    listed = [it for it in server.get("/v1/keys").json()["items"] if it["id"] == made["id"]]
    assert not listed or listed[0]["revoked_at"], "a deleted key is still listed as active"
