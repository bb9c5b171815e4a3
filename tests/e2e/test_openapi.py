"""docs/openapi.yaml and the running server agree on which methods each documented path takes: every documented
operation reaches a handler (never 404 "no such resource" or 405), every other method of the path is answered 405
with an Allow header naming exactly the documented methods, and a path outside the document is 404."""

import secrets

import yaml

from support import REPO_ROOT

SPEC = yaml.safe_load((REPO_ROOT / "docs" / "openapi.yaml").read_text())
METHODS = ("get", "post", "put", "delete", "patch")
# Stand-ins for path parameters: well-formed values that name nothing, so no request changes anything.
PARAMETERS = {"id": "01JB0000000000000000000000", "name": "no-such-name", "asset": "no-such-asset.js"}


def concrete(path):
    for name, value in PARAMETERS.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{path}: add its parameter to PARAMETERS"
    return path


def documented(path):
    return {m for m in SPEC["paths"][path] if m in METHODS}


def call(server, method, path):
    body = {"json": {}} if method in ("post", "put", "patch") else {}
    return server.request(method.upper(), concrete(path), **body)


def test_the_document_has_paths():
    # A broken or emptied document would make the loops below check nothing rather than fail.
    assert len(SPEC["paths"]) >= 15
    assert all(documented(p) for p in SPEC["paths"]), "a documented path without any operation"


def test_documented_operations_reach_a_handler(server):
    problems = []
    for path in sorted(SPEC["paths"]):
        for method in sorted(documented(path)):
            r = call(server, method, path)
            if r.status_code == 405 or (r.status_code == 404 and "no such resource" in r.text):
                problems.append(f"{method.upper()} {path}: {r.status_code} {r.text[:120]}")
    assert not problems, "documented but not served:\n" + "\n".join(problems)


def test_undocumented_methods_are_refused_with_the_documented_allow_list(server):
    problems = []
    for path in sorted(SPEC["paths"]):
        allowed = documented(path)
        for method in sorted(set(METHODS) - allowed):
            r = call(server, method, path)
            # HEAD goes with GET wherever GET is allowed; the document leaves it implicit.
            listed = {m.strip().lower() for m in r.headers.get("Allow", "").split(",") if m.strip()} - {"head"}
            if r.status_code != 405:
                problems.append(f"{method.upper()} {path}: {r.status_code} {r.text[:120]}")
            elif listed != allowed:
                problems.append(f"{method.upper()} {path}: Allow {r.headers.get('Allow')!r}, the document says "
                                f"{sorted(allowed)}")
    assert not problems, "served but not documented:\n" + "\n".join(problems)


def test_a_path_outside_the_document_is_not_found(server):
    r = server.get("/v1/" + secrets.token_hex(4))
    assert r.status_code == 404
