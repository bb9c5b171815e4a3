"""The store's own expiry as a second line behind the sweeper: the S3 bucket lifecycle rule installed by imgpipe, read
back and checked against retention (`imgpipe storage install-lifecycle | show-lifecycle`, `imgpipe doctor`,
`storage.s3.lifecycle` at the start of `serve`), on SeaweedFS (scripts/services/seaweedfs), an S3 server that
implements bucket lifecycle. On Azure imgpipe installs nothing and says so.

Needs IMGPIPE_TEST_SEAWEEDFS_* from scripts/test; without them these tests skip, unless IMGPIPE_REQUIRE_SEAWEEDFS is 1,
when they fail.
"""

import json
import os
import secrets

import pytest

from support import CORPORA, run_cli
from test_cloud_storage import CORPUS, cloud_env


def seaweedfs_env(**settings):
    """IMGPIPE_* settings for a fresh bucket on the SeaweedFS S3 gateway, plus `settings` (IMGPIPE_ names)."""
    e = os.environ
    names = ["IMGPIPE_TEST_SEAWEEDFS_ENDPOINT", "IMGPIPE_TEST_SEAWEEDFS_ACCESS_KEY", "IMGPIPE_TEST_SEAWEEDFS_SECRET_KEY"]
    missing = [n for n in names if not e.get(n)]
    if missing:
        why = f"{', '.join(missing)} not set: start scripts/services/seaweedfs"
        if e.get("IMGPIPE_REQUIRE_SEAWEEDFS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    env = {
        "IMGPIPE_STORAGE_BACKEND": "s3",
        "IMGPIPE_STORAGE_S3_ENDPOINT": e["IMGPIPE_TEST_SEAWEEDFS_ENDPOINT"],
        "IMGPIPE_STORAGE_S3_REGION": e.get("IMGPIPE_TEST_SEAWEEDFS_REGION", "us-east-1"),
        "IMGPIPE_STORAGE_S3_BUCKET": f"l{secrets.token_hex(4)}",
        "IMGPIPE_STORAGE_S3_ACCESS_KEY": e["IMGPIPE_TEST_SEAWEEDFS_ACCESS_KEY"],
        "IMGPIPE_STORAGE_S3_SECRET_KEY": e["IMGPIPE_TEST_SEAWEEDFS_SECRET_KEY"],
    }
    env.update(settings)
    return env


def storage(verb, data_dir, env):
    """`imgpipe storage VERB` -> (exit status, parsed JSON on stdout or None, stderr)."""
    p = run_cli("storage", verb, "--data-dir", data_dir, env=env)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out, p.stderr.decode()


def doctor_lines(data_dir, env, check):
    """`imgpipe doctor` -> (exit status, the output lines of one check with their fix lines)."""
    p = run_cli("doctor", "--data-dir", data_dir, env=env)
    lines, keep = [], False
    for line in p.stdout.decode().splitlines():
        if line[:5].strip() in ("OK", "WARN", "FAIL"):
            keep = line[5:17].strip() == check
        if keep:
            lines.append(line)
    return p.returncode, lines


def rule(rules, prefix):
    found = [r for r in rules if r["prefix"] == prefix and r["expiration_days"] > 0]
    assert len(found) == 1, rules
    return found[0]


def test_the_rule_is_installed_read_back_and_checked_against_retention(tmp_path):
    data = tmp_path / "data"
    env = seaweedfs_env(IMGPIPE_RETENTION_ORIGINALS="7d", IMGPIPE_RETENTION_RENDITIONS="36h")
    # A new bucket (doctor's probe object makes it) has no rules: doctor stays calm, since storage.s3.lifecycle is
    # off; show-lifecycle says they differ from retention.
    rc, lines = doctor_lines(data, env, "lifecycle")
    assert lines and lines[0].startswith("OK") and "no lifecycle rule" in lines[0], lines
    rc, out, err = storage("show-lifecycle", data, env)
    assert rc == 1 and out["rules"] == [] and not out["matches_retention"], err

    rc, out, err = storage("install-lifecycle", data, env)
    assert rc == 0, err
    # Read back from the server: originals expire a day after their 7 days, renditions a day after 36 hours (rounded
    # up to whole days), and incomplete uploads are aborted after a day.
    assert rule(out["rules"], "originals/")["expiration_days"] == 8
    assert rule(out["rules"], "renditions/")["expiration_days"] == 3
    assert any(r["abort_incomplete_upload_days"] == 1 and r["prefix"] == "" for r in out["rules"]), out["rules"]
    assert out["matches_retention"] and out["findings"] == []
    rc, shown, err = storage("show-lifecycle", data, env)
    assert rc == 0 and shown["rules"] == out["rules"], err
    rc, lines = doctor_lines(data, env, "lifecycle")
    assert lines[0].startswith("OK") and "match retention" in lines[0], lines

    # Retention shortened since: the rule expires late. Not dangerous, but doctor says how to fix it.
    shorter = dict(env, IMGPIPE_RETENTION_ORIGINALS="3d")
    rc, out, err = storage("show-lifecycle", data, shorter)
    assert rc == 1 and not out["matches_retention"]
    assert [f["expires_early"] for f in out["findings"]] == [False], out["findings"]
    assert "8 days" in out["findings"][0]["message"] and "4 days" in out["findings"][0]["message"]
    rc, lines = doctor_lines(data, shorter, "lifecycle")
    assert lines[0].startswith("WARN") and "install-lifecycle" in "\n".join(lines), lines

    # Retention lengthened since: the rule deletes originals before their retention ends. Doctor fails.
    longer = dict(env, IMGPIPE_RETENTION_ORIGINALS="30d")
    rc, out, err = storage("show-lifecycle", data, longer)
    assert rc == 1 and any(f["expires_early"] for f in out["findings"]), out["findings"]
    assert "DANGER" in err
    rc, lines = doctor_lines(data, longer, "lifecycle")
    assert rc == 1 and any(line.startswith("FAIL") and "originals/" in line for line in lines), lines
    # Installing again replaces the rules with the new retention's.
    rc, out, err = storage("install-lifecycle", data, longer)
    assert rc == 0 and rule(out["rules"], "originals/")["expiration_days"] == 31, err
    assert len([r for r in out["rules"] if r["prefix"] == "originals/"]) == 1


def test_serve_installs_the_rule_and_doctor_refuses_it_beside_a_legal_hold(start_server):
    env = seaweedfs_env(IMGPIPE_STORAGE_S3_LIFECYCLE="true", IMGPIPE_RETENTION_ORIGINALS="2d")
    server = start_server(env=env)
    image_id = server.upload_ok((CORPORA / CORPUS[0]).read_bytes())["id"]
    rc, out, err = storage("show-lifecycle", server.data_dir, env)
    assert rc == 0 and rule(out["rules"], "originals/")["expiration_days"] == 3, err
    # serve read the rules back after installing them and found nothing to warn about.
    assert not [line for line in server.stderr_lines if "lifecycle" in line], server.log_tail()
    # The bucket cannot see legal holds: with an expiring rule, a held image would be deleted all the same.
    assert server.request("PUT", f"/v1/images/{image_id}/hold", json={"reason": "audit 2026-4"}).status_code in (
        200, 201)
    assert server.stop() == 0
    rc, lines = doctor_lines(server.data_dir, env, "lifecycle")
    assert rc == 1, lines
    assert any(line.startswith("FAIL") and "legal hold" in line for line in lines), lines


def test_azure_gets_no_rule_and_says_so(tmp_path):
    env = cloud_env("azure")
    data = tmp_path / "data"
    rc, lines = doctor_lines(data, env, "lifecycle")
    assert lines and "does not install" in lines[0] and "OPERATIONS.md" in lines[0], lines
    rc, out, err = storage("show-lifecycle", data, env)
    assert rc == 2 and "management-policy" in err, err
    # Asking for the S3 rule on Azure is refused at start, naming where the Azure policy is set instead.
    p = run_cli("config", "check", "--data-dir", data, env=dict(env, IMGPIPE_STORAGE_S3_LIFECYCLE="true"))
    assert p.returncode == 2 and b"lifecycle management policy" in p.stderr, p.stderr
