"""Camera metadata: what the API reports must match exiftool's reading, and the warehouse must hold it."""

import json

import pytest

from support import CORPORA, exiftool

GPS_PHOTOS = [
    CORPORA / "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg",
    CORPORA / "exif/metadata-extractor-images/jpg/FujiFilm FinePixS1Pro (1).jpg",   # west longitude
    CORPORA / "exif/metadata-extractor-images/jpg/HTC Desire.jpg",
    CORPORA / "exif/metadata-extractor-images/heic/IMG_1034.heic",                 # HEIC
]


def expected_exif(path):
    ref = exiftool(path)
    want = {
        "make": str(ref["Make"]).strip(),
        "model": str(ref["Model"]).strip(),
        "taken_at": ref["DateTimeOriginal"].replace(":", "-", 2).replace(" ", "T"),
        "lat": ref["GPSLatitude"],
        "lon": ref["GPSLongitude"],
        "alt": None,
    }
    if "GPSAltitude" in ref:
        want["alt"] = ref["GPSAltitude"] * (-1 if ref.get("GPSAltitudeRef") == 1 else 1)
    for ours, theirs in (("lens_model", "LensModel"), ("software", "Software")):
        if theirs in ref:
            want[ours] = str(ref[theirs]).strip()
    return want


def test_exif_matches_exiftool_and_reaches_the_warehouse(server):
    ids = {}
    for path in GPS_PHOTOS:
        ids[path] = server.upload_ok(path.read_bytes())["id"]
    for path, image_id in ids.items():
        image = server.wait_processed(image_id)
        want, exif = expected_exif(path), image["exif"]
        name = path.name
        assert exif["make"] == want["make"], name
        assert exif["model"] == want["model"], name
        # EXIF has no zone; an offset is appended only when OffsetTimeOriginal exists.
        assert exif["taken_at"].startswith(want["taken_at"]), (name, exif["taken_at"])
        assert exif["gps"] is not None, name
        assert exif["gps"]["lat"] == pytest.approx(want["lat"], abs=1e-5), name
        assert exif["gps"]["lon"] == pytest.approx(want["lon"], abs=1e-5), name
        if want["alt"] is not None:
            assert exif["gps"]["alt"] == pytest.approx(want["alt"], abs=0.01), name
        for field in ("lens_model", "software"):
            if field in want:
                assert exif[field] == want[field], (name, field)

    id_list = ", ".join(f"'{i}'" for i in ids.values())
    assert server.scalar(f"SELECT count(*) FROM images WHERE id IN ({id_list}) AND status = 'processed'") == "4"

    # The warehouse row of the iPhone photo carries its make and latitude, whatever the columns are called.
    iphone = GPS_PHOTOS[0]
    row = server.query_rows(f"SELECT * FROM images WHERE id = '{ids[iphone]}'")
    assert len(row) == 1
    values = list(row[0].values())
    assert "Apple" in values, f"no column holds the camera make: {row[0]}"
    assert any(is_close(v, 47.6271666666667) for v in values), f"no column holds the GPS latitude: {row[0]}"


def is_close(text, number):
    try:
        return abs(float(text) - number) < 1e-5
    except ValueError:
        return False


def test_query_cli_formats_and_read_only(server):
    image_id = server.upload_ok((CORPORA / "exif/pillow/exif-ifd-offset.jpg").read_bytes())["id"]
    sql = f"SELECT id, format FROM images WHERE id = '{image_id}'"

    table = server.query(sql, "table")
    assert table.returncode == 0 and image_id in table.stdout.decode()
    as_json = server.query(sql, "json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == [{"id": image_id, "format": "jpeg"}]
    assert server.query_rows(sql) == [{"id": image_id, "format": "jpeg"}]

    for write in ("INSERT INTO images (id) VALUES ('x')", f"DELETE FROM images WHERE id = '{image_id}'",
                  "DROP TABLE images"):
        p = server.query(write)
        assert p.returncode == 1, f"{write!r} was not refused: exit {p.returncode} {p.stdout!r}"
        assert p.stderr.strip(), f"{write!r}: refused without a message"
    assert server.scalar("SELECT count(*) FROM images") == "1"
    assert server.get(f"/v1/images/{image_id}").status_code == 200
