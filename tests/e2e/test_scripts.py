"""Processing scripts (docs/SCRIPTS.md): push with the CLI, upload with ?pipeline=NAME, the script's renditions and
labels, versions recorded on the runs; the HTTP API for scripts; bad scripts refused naming file and line."""

import base64
import csv
import io
import json
import os
import subprocess
import time
import urllib.parse
import uuid

import pytest

from support import CORPORA, run_cli

PHOTO = (CORPORA / "valid/kodak/kodim23.png").read_bytes()  # 768x512

PIPELINE = """description = "square and grey"

[[steps]]
op = "auto-orient"

[[steps]]
op = "thumbnail"
width = 300

[[steps]]
op = "sharpness"

[[steps]]
op = "lua"
file = "labels.lua"

[[renditions]]
name = "square"
format = "webp"
steps = [ { op = "crop", width = 120, height = 120, mode = "attention" } ]
"""

LABELS = """
run.label("orientation", image.width() >= image.height() and "landscape" or "portrait")
run.label("pixels", tostring(image.width() * image.height()), image.width() * image.height())
image.apply("grayscale")
run.rendition("grey", {format = "png"})
"""


def wait_failed(server, image_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        body = server.get(f"/v1/images/{image_id}").json()
        if body["status"] == "failed":
            return body
        assert body["status"] in ("queued", "processing"), body
        assert time.monotonic() < deadline, f"image {image_id} still {body['status']} after {timeout}s"
        time.sleep(0.05)


def push(server, name, folder):
    return run_cli("scripts", "push", name, str(folder), "--data-dir", str(server.data_dir))


def test_pushed_script_runs_for_uploads_that_name_it(server, tmp_path):
    folder = tmp_path / "square"
    folder.mkdir()
    (folder / "pipeline.toml").write_text(PIPELINE)
    (folder / "labels.lua").write_text(LABELS)
    p = push(server, "square", folder)
    assert p.returncode == 0, p.stderr.decode()
    name, version = p.stdout.decode().split()
    assert name == "square" and len(version) == 64

    r = server.request("POST", "/v1/images?pipeline=square", data=PHOTO)
    assert r.status_code == 201, r.text
    image = server.wait_processed(r.json()["id"])
    assert image["pipeline"] == "square"
    by_name = {rd["name"]: rd for rd in image["renditions"]}
    assert set(by_name) == {"square", "grey"}
    assert (by_name["square"]["width"], by_name["square"]["height"]) == (120, 120)
    assert by_name["square"]["format"] == "webp"
    assert (by_name["grey"]["width"], by_name["grey"]["height"]) == (300, 200)
    grey = server.get(f"/v1/images/{image['id']}/renditions/grey")
    assert grey.status_code == 200 and grey.content[:8] == b"\x89PNG\r\n\x1a\n"

    rows = server.query_rows(
        f"SELECT script_name, script_version, key, value, number FROM image_labels "
        f"WHERE image_id = '{image['id']}' ORDER BY id")
    assert [(row["key"], row["value"]) for row in rows] == [
        ("sharpness", rows[0]["value"]), ("orientation", "landscape"), ("pixels", "60000")]
    assert all(row["script_name"] == "square" and row["script_version"] == version for row in rows)
    assert float(rows[0]["number"]) > 0
    assert float(rows[2]["number"]) == 60000
    runs = server.query_rows(
        f"SELECT script_name, script_version, status FROM processing_runs WHERE image_id = '{image['id']}'")
    assert runs == [{"script_name": "square", "script_version": version, "status": "processed"}]

    # A default upload still runs the built-in pipeline and records no script.
    plain = server.wait_processed(server.upload_ok(PHOTO)["id"])
    assert {rd["name"] for rd in plain["renditions"]} == {"thumb-256", "thumb-1024"}
    assert server.scalar(
        f"SELECT script_name = '' AND script_version = '' FROM processing_runs WHERE image_id = '{plain['id']}'") == "1"


def test_new_version_and_rollback_take_effect_without_restart(server, tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "pipeline.toml").write_text('[[renditions]]\nname = "v1"\n')
    assert push(server, "flip", folder).returncode == 0
    first = server.wait_processed(server.request("POST", "/v1/images?pipeline=flip", data=PHOTO).json()["id"])
    assert [rd["name"] for rd in first["renditions"]] == ["v1"]

    (folder / "pipeline.toml").write_text('[[renditions]]\nname = "v2"\n')
    assert push(server, "flip", folder).returncode == 0
    second = server.wait_processed(server.request("POST", "/v1/images?pipeline=flip", data=PHOTO).json()["id"])
    assert [rd["name"] for rd in second["renditions"]] == ["v2"]

    p = run_cli("scripts", "rollback", "flip", "--data-dir", str(server.data_dir))
    assert p.returncode == 0, p.stderr.decode()
    third = server.wait_processed(server.request("POST", "/v1/images?pipeline=flip", data=PHOTO).json()["id"])
    assert [rd["name"] for rd in third["renditions"]] == ["v1"]
    versions = server.query_rows("SELECT DISTINCT script_version FROM processing_runs WHERE script_name = 'flip'")
    assert len(versions) == 2

    listed = run_cli("scripts", "list", "--data-dir", str(server.data_dir))
    assert listed.returncode == 0 and "flip" in listed.stdout.decode()


def test_bad_script_is_refused_naming_file_and_line(server, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "pipeline.toml").write_text('[[steps]]\nop = "thumbnail"\nwidth = 10\n\n[[steps]]\nop = "blurr"\n')
    p = push(server, "bad", folder)
    assert p.returncode == 2
    assert "pipeline.toml:6: step 'blurr' is unknown" in p.stderr.decode()

    (folder / "pipeline.toml").write_text('[[steps]]\nop = "lua"\nfile = "x.lua"\n')
    (folder / "x.lua").write_text("local a = \n")
    p = push(server, "bad", folder)
    assert p.returncode == 2
    assert "x.lua:" in p.stderr.decode()

    r = server.request("POST", "/v1/images?pipeline=bad", data=PHOTO)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unknown_pipeline"


def test_scripts_http_api(server):
    body = {"name": "api-made", "files": {"pipeline.toml": '[[renditions]]\nname = "small"\n'}}
    r = server.request("POST", "/v1/scripts", json=body)
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    assert r.json()["files"] == body["files"]
    listed = server.get("/v1/scripts").json()["scripts"]
    assert [s["name"] for s in listed] == ["api-made"] and listed[0]["version"] == version
    assert server.get("/v1/scripts/api-made").json()["version"] == version
    assert server.get("/v1/scripts/nope").status_code == 404

    bad = server.request("POST", "/v1/scripts", json={"name": "x", "files": {"pipeline.toml": "steps = 3\n"}})
    assert bad.status_code == 400
    assert "pipeline.toml:1:" in bad.json()["error"]["message"]

    uploader = server.create_key("uploader")
    assert server.get("/v1/scripts", key=uploader).status_code == 403
    image = server.wait_processed(server.request("POST", "/v1/images?pipeline=api-made", data=PHOTO,
                                                 key=uploader).json()["id"], key=uploader)
    assert [rd["name"] for rd in image["renditions"]] == ["small"]


def test_reprocess_runs_a_new_version_over_stored_images(server, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "pipeline.toml").write_text('[[steps]]\nop = "lua"\nfile = "l.lua"\n')
    (folder / "l.lua").write_text('run.label("version", "one")\n')
    assert push(server, "relabel", folder).returncode == 0
    image = server.wait_processed(server.request("POST", "/v1/images?pipeline=relabel", data=PHOTO).json()["id"])
    plain = server.wait_processed(server.upload_ok(PHOTO)["id"])

    (folder / "l.lua").write_text('run.label("version", "two")\n')
    assert push(server, "relabel", folder).returncode == 0
    p = run_cli("reprocess", "--script", "relabel", "--since", image["received_at"], "--data-dir",
                str(server.data_dir))
    assert p.returncode == 0, p.stderr.decode()
    assert "queued 2 image(s)" in p.stdout.decode()
    for image_id in (image["id"], plain["id"]):
        server.wait_processed(image_id)
    rows = server.query_rows(
        f"SELECT value FROM image_labels WHERE image_id = '{image['id']}' ORDER BY id")
    assert [row["value"] for row in rows] == ["one", "two"]  # the old version's labels stay beside the new ones
    assert server.scalar(f"SELECT count(*) FROM image_labels WHERE image_id = '{plain['id']}'") == "1"
    runs = server.query_rows(f"SELECT DISTINCT script_version FROM processing_runs WHERE image_id = '{image['id']}'")
    assert len(runs) == 2

    bad = run_cli("reprocess", "--script", "nope", "--since", image["received_at"], "--data-dir", str(server.data_dir))
    assert bad.returncode == 2 and "nope" in bad.stderr.decode()


EXEC_PIPELINE = """description = "labels from Python"

[[steps]]
op = "exec"
command = ["python3", "brightness.py"]
input = "pnm"
timeout = 60
env = { MODE = "mean" }
"""

# Debian's python3 alone (no imaging library): reads the binary PPM imgpipe wrote, computes labels from the pixels,
# and reports the environment it sees, which must not hold the server's.
BRIGHTNESS = """
import json, os
meta = json.load(open("input.json"))
magic, size, maxval, pixels = open(meta["input"], "rb").read().split(b"\\n", 3)
mean = sum(pixels) / len(pixels)
env = sorted(k for k in os.environ if k != "LC_CTYPE")
json.dump({"labels": [
    {"key": "brightness", "value": "%.2f" % mean, "number": mean},
    {"key": "size", "value": size.decode()},
    {"key": "env", "value": ",".join(env)},
    {"key": "mode", "value": os.environ["MODE"]},
]}, open("result.json", "w"))
"""


def test_exec_step_runs_python_over_uploads(start_server, tmp_path):
    server = start_server(env={"IMGPIPE_TEST_EXEC_SECRET": "hunter2"})
    folder = tmp_path / "py"
    folder.mkdir()
    (folder / "pipeline.toml").write_text(EXEC_PIPELINE)
    (folder / "brightness.py").write_text(BRIGHTNESS)
    p = push(server, "py", folder)
    assert p.returncode == 0, p.stderr.decode()
    version = p.stdout.decode().split()[1]

    image = server.wait_processed(server.request("POST", "/v1/images?pipeline=py", data=PHOTO).json()["id"])
    rows = server.query_rows(
        f"SELECT key, value, number, script_version FROM image_labels WHERE image_id = '{image['id']}' ORDER BY id")
    labels = {row["key"]: row for row in rows}
    assert set(labels) == {"brightness", "size", "env", "mode"}
    assert labels["size"]["value"] == "768 512"
    assert 0 < float(labels["brightness"]["number"]) < 255
    assert labels["env"]["value"] == "MODE"  # nothing of the server's environment, only what the step declares
    assert labels["mode"]["value"] == "mean"
    assert {row["script_version"] for row in rows} == {version}

    # A program that fails fails the image at once, with its reason.
    (folder / "brightness.py").write_text("import sys\nprint('no model here')\nsys.exit(4)\n")
    assert push(server, "py", folder).returncode == 0
    failed = wait_failed(server, server.request("POST", "/v1/images?pipeline=py", data=PHOTO).json()["id"])
    assert "exited with status 4" in failed["error"] and "no model here" in failed["error"]


ROUTES_CONFIG = """
[[processing.routes]]
script = "from-kafka"
source = "kafka"

[[processing.routes]]
script = "front-camera"
metadata = { camera = "front" }

[[processing.routes]]
script = "pngs"
format = "png"
max_bytes = "10MiB"

[[processing.routes]]
script = "uploads"
source = "upload"
"""


def test_routes_choose_the_script_by_source_and_condition(start_server, tmp_path):
    config = tmp_path / "routes.toml"
    config.write_text(ROUTES_CONFIG)
    server = start_server(args=("--config", str(config)))
    for name in ("from-kafka", "front-camera", "pngs", "uploads", "asked-for"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "pipeline.toml").write_text(f'[[renditions]]\nname = "{name}"\n')
        assert push(server, name, folder).returncode == 0

    jpeg = (CORPORA / "valid/libjpeg-turbo-testimages/testorig.jpg").read_bytes()

    def routed(data, path="/v1/images", headers=None):
        r = server.request("POST", path, data=data, headers=headers)
        assert r.status_code == 201, r.text
        image = server.wait_processed(r.json()["id"])
        assert [rd["name"] for rd in image["renditions"]] == [image["pipeline"]]
        return image["pipeline"]

    assert routed(PHOTO) == "pngs"                       # by format (and size)
    assert routed(jpeg) == "uploads"                      # by source: an upload that no earlier route took
    assert routed(jpeg, headers={"X-Imgpipe-Metadata": '{"camera": "front"}'}) == "front-camera"  # by metadata
    assert routed(PHOTO, headers={"X-Imgpipe-Metadata": '{"camera": "back"}'}) == "pngs"
    assert routed(PHOTO, path="/v1/images?pipeline=asked-for") == "asked-for"  # the request's own choice wins
    runs = server.query_rows("SELECT DISTINCT script_name FROM processing_runs ORDER BY script_name")
    assert [r["script_name"] for r in runs] == ["asked-for", "front-camera", "pngs", "uploads"]


def test_push_runs_the_example_and_refuses_a_failing_one(server, tmp_path):
    folder = tmp_path / "ex"
    folder.mkdir()
    (folder / "example.png").write_bytes(PHOTO)
    (folder / "pipeline.toml").write_text(
        'description = "with an example"\nexample = "example.png"\n\n'
        '[[steps]]\nop = "exec"\ncommand = ["python3", "check.py"]\n')
    (folder / "check.py").write_text(
        "import json\nmeta = json.load(open('input.json'))\n"
        "assert meta['width'] < 500, 'the example is %d wide' % meta['width']\n"
        "json.dump({}, open('result.json', 'w'))\n")
    p = push(server, "ex", folder)
    assert p.returncode == 2
    message = p.stderr.decode()
    assert "pipeline.toml:2: the example run over 'example.png' failed: " in message
    assert "pipeline.toml:4: step 'exec' exited with status 1" in message and "the example is 768 wide" in message
    assert server.get("/v1/scripts/ex").status_code == 404  # nothing stored

    (folder / "check.py").write_text("import json\njson.dump({'labels': [{'key': 'ok'}]}, open('result.json', 'w'))\n")
    p = push(server, "ex", folder)
    assert p.returncode == 0, p.stderr.decode()

    # Over HTTP the example travels base64-encoded, and comes back the same way.
    shown = server.get("/v1/scripts/ex").json()
    assert base64.b64decode(shown["files_base64"]["example.png"]) == PHOTO
    body = {"name": "ex-http", "files": {"pipeline.toml": 'example = "e.png"\n[[steps]]\nop = "lua"\nfile = "f.lua"\n',
                                         "f.lua": "error('no luck')\n"},
            "files_base64": {"e.png": base64.b64encode(PHOTO).decode()}}
    r = server.request("POST", "/v1/scripts", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_script"
    assert "pipeline.toml:1: the example run over 'e.png' failed: " in r.json()["error"]["message"]
    assert "f.lua:1: no luck" in r.json()["error"]["message"]


def fresh_postgres_database(name):
    """A new database on the test PostgreSQL (scripts/services/postgres), as a URL; fails under scripts/test when
    the service is missing, skips elsewhere."""
    url = os.environ.get("IMGPIPE_TEST_POSTGRES_URL", "")
    if not url:
        message = "IMGPIPE_TEST_POSTGRES_URL is not set (scripts/services/postgres start writes it)"
        if os.environ.get("IMGPIPE_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    database = f"{name}_{uuid.uuid4().hex[:12]}"
    created = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {database}"],
                             capture_output=True)
    assert created.returncode == 0, created.stderr.decode()
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def test_reprocess_on_postgres_keeps_old_runs_and_labels_beside_new(start_server, tmp_path):
    db = {"IMGPIPE_DATABASE_BACKEND": "postgres", "IMGPIPE_DATABASE_URL": fresh_postgres_database("scripts_e2e")}
    server = start_server(env=db)

    def rows(sql):
        p = run_cli("query", "--data-dir", server.data_dir, "--format", "csv", sql, env=db)
        assert p.returncode == 0, p.stderr.decode()
        return list(csv.DictReader(io.StringIO(p.stdout.decode())))

    folder = tmp_path / "pg"
    folder.mkdir()
    (folder / "pipeline.toml").write_text('[[steps]]\nop = "sharpness"\n[[steps]]\nop = "lua"\nfile = "l.lua"\n')
    (folder / "l.lua").write_text('run.label("version", "one", 1)\n')
    first = push(server, "pg-relabel", folder)
    assert first.returncode == 0, first.stderr.decode()
    v1 = first.stdout.decode().split()[1]
    image = server.wait_processed(server.request("POST", "/v1/images?pipeline=pg-relabel", data=PHOTO).json()["id"])

    (folder / "l.lua").write_text('run.label("version", "two", 2)\n')
    second = push(server, "pg-relabel", folder)
    assert second.returncode == 0, second.stderr.decode()
    v2 = second.stdout.decode().split()[1]
    p = run_cli("reprocess", "--script", "pg-relabel", "--since", image["received_at"], "--data-dir",
                server.data_dir, env=db)
    assert p.returncode == 0, p.stderr.decode()
    assert "queued 1 image(s)" in p.stdout.decode()
    deadline = time.monotonic() + 60
    while len(rows(f"SELECT id FROM processing_runs WHERE image_id = '{image['id']}'")) < 2:
        assert time.monotonic() < deadline, "the reprocessed image never ran again"
        time.sleep(0.1)
    server.wait_processed(image["id"])

    labels = rows(f"SELECT script_version, key, value, number FROM image_labels WHERE image_id = '{image['id']}' "
                  "ORDER BY id")
    assert [(r["script_version"], r["key"], r["value"]) for r in labels] == [
        (v1, "sharpness", labels[0]["value"]), (v1, "version", "one"),
        (v2, "sharpness", labels[0]["value"]), (v2, "version", "two")]
    assert float(labels[3]["number"]) == 2
    runs = rows(f"SELECT script_name, script_version, status FROM processing_runs WHERE image_id = '{image['id']}' "
                "ORDER BY id")
    assert runs == [{"script_name": "pg-relabel", "script_version": v1, "status": "processed"},
                    {"script_name": "pg-relabel", "script_version": v2, "status": "processed"}]


ESCAPES = {
    "os-execute": ("os.execute('touch /tmp/imgpipe-pwned')", "attempt to index a nil value (global 'os')"),
    "io-open": ("io.open('/etc/passwd')", "attempt to index a nil value (global 'io')"),
    "require": ("require('os')", "attempt to call a nil value (global 'require')"),
    "load-bytecode": ("local f, err = load('\\27Lua\\84\\0junk', 'x', 'b')\nerror(err)", "attempt to load a binary chunk"),
    "string-dump": ("local d = string.dump(function() end)", "field 'dump'"),
    "debug": ("debug.sethook()", "global 'debug'"),
    "infinite-loop": ("while true do end", "ran more than 200000000 instructions"),
    "memory-bomb": ("local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end", "bytes of memory"),
    "deep-recursion": ("local function f(n) return 1 + f(n + 1) end f(1)", "stack overflow"),
}


def test_sandbox_escapes_fail_their_image_and_leave_the_worker_unharmed(server, tmp_path):
    ids = {}
    for name, (code, _) in ESCAPES.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "pipeline.toml").write_text('[[steps]]\nop = "lua"\nfile = "escape.lua"\n')
        (folder / "escape.lua").write_text(code + "\n")
        p = push(server, f"esc-{name}", folder)
        assert p.returncode == 0, p.stderr.decode()
        r = server.request("POST", f"/v1/images?pipeline=esc-{name}", data=PHOTO)
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    for name, image_id in ids.items():
        failed = wait_failed(server, image_id, timeout=120)
        assert "escape.lua" in failed["error"] and ESCAPES[name][1] in failed["error"], (name, failed["error"])
    # Same process, same workers: the next upload is processed as ever, and nothing escaped onto the disk.
    assert server.proc.poll() is None
    assert server.wait_processed(server.upload_ok(PHOTO)["id"])["status"] == "processed"
    assert not os.path.exists("/tmp/imgpipe-pwned")


def test_scripts_run_tries_a_folder_on_local_files(tmp_path):
    folder = tmp_path / "try"
    folder.mkdir()
    (folder / "pipeline.toml").write_text('[[steps]]\nop = "lua"\nfile = "t.lua"\n[[renditions]]\nname = "t"\n')
    (folder / "t.lua").write_text('image.apply("thumbnail", {width = 100})\nrun.label("w", tostring(image.width()))\n')
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    out = tmp_path / "out"
    p = run_cli("scripts", "run", folder, photo, "--repeat", "3", "--out", out)
    assert p.returncode == 0, p.stderr.decode()
    report = json.loads(p.stdout.decode())
    assert (report["files"], report["ok"], report["failed"], report["labels"]) == (3, 3, 0, 3)
    assert (out / "photo.t.jpg").read_bytes()[:3] == b"\xff\xd8\xff"

    (folder / "t.lua").write_text("error('nope')\n")
    p = run_cli("scripts", "run", folder, photo)
    assert p.returncode == 1 and "t.lua:1: nope" in p.stderr.decode()
