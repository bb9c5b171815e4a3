"""Every file of the valid and corrupt corpora through one server, four clients at a time.

valid/: 201 then processed, or 415 unsupported_format (a format outside limits.allowed_formats or one the decoders do
not read), and 422 only for the decoder limits the corpus README lists.
corrupt/: a 4xx with an error JSON and nothing stored, or (odd but legal files) 201 then processed. Never a 5xx,
never stuck in queued/processing, never "failed". Bombs refused. The server stays alive with bounded memory."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from support import CORPORA, ERROR_CODES

# Valid by their specs but refused by Debian 12's decoders (libvips 8.14, libheif 1.15, libpng 1.6), or truncated:
# 415 or 422 is accepted for these. The first four are the corpus README's list; the others were checked with `vipsthumbnail` on
# Debian 12, which refuses them too.
DECODER_LIMITS = {
    "valid/libavif/avif/draw_points_idat_metasize0.avif": "libheif 1.15: no 'meta' box",
    "valid/libavif/avif/draw_points_idat_progressive_metasize0.avif": "libheif 1.15: no 'meta' box",
    "valid/pillow/avif/star.avifs": "an AVIF sequence; libheif 1.15 reads no sequences",
    "valid/libjxl-conformance/spot.jxl": "more than 4 channels",
    "valid/libavif/avif/clap_irot_imir_non_essential.avif": "libheif 1.15 mirrors only 8-bit images",
    "valid/pillow/tiff/tiff_tiled_planar_lzw.tiff": "libvips 8.14: tiled TIFF with separate planes",
    "valid/libavif/png/circle-trns-before-plte.png": "libpng refuses a tRNS chunk before PLTE",
    # Truncated files: libvips' lenient default shows them with a grey bottom, strict decoding refuses them, and
    # imgpipe refuses truncated uploads (422 invalid_image) by design.
    "valid/metadata-extractor-images/jpg/User Comment Encoding.jpg": "truncated: the scan ends without its EOI",
    "valid/pillow/jpeg/ultrahdr.jpg": "truncated: the main image's scan has no data",
}
# Formats every decoder here reads in every variant the corpus has (but DECODER_LIMITS): refusing one is a bug.
MUST_ACCEPT = {".jpg", ".jpeg", ".mpo", ".webp", ".gif", ".png"}
# The bombs that must be refused outright: their declared size or frame count is past the default limits, or their
# format is not allowed. (decompression_bomb_extents.gif and png_decompression_dos.png are 100x100 and 1x1 images a
# careful decoder reads safely; they follow the general rule.)
MUST_REFUSE = {
    "corrupt/bombs/lottapixel.jpg": "64250x64250 > limits.max_pixels",
    "corrupt/bombs/uber.gif": "~40k frames > limits.max_frames",
    "corrupt/bombs/decompression_bomb.gif": "65535-wide frame, truncated",
    "corrupt/bombs/decompression_bomb.ico": "ICO is not an allowed format",
}
MAX_RSS = 1536 * 1024 * 1024      # memory bound for the whole sweep
SETTLE_TIMEOUT = 600              # seconds for every accepted file to finish processing: a hang detector


def corpus_files(folder):
    root = CORPORA / folder
    return sorted(p for p in root.rglob("*") if p.is_file() and "LICENSES" not in p.parts)


def rel(path):
    return path.relative_to(CORPORA).as_posix()


def upload_all(server, key, paths):
    """Uploads each file from 4 threads, one session each; returns {path: (status, json or text)}."""
    local = threading.local()

    def one(path):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        try:
            r = local.session.post(server.base + "/v1/images", data=path.read_bytes(), timeout=120,
                                   headers={"Authorization": f"Bearer {key}",
                                            "Content-Type": "application/octet-stream"})
        except requests.RequestException as e:
            return path, (None, f"{type(e).__name__}: {e}")
        try:
            body = r.json()
        except ValueError:
            body = r.text[:200]
        return path, (r.status_code, body, r.headers.get("X-Request-Id"))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, paths))


def settle(server, ids):
    """Polls every accepted image until none is queued or processing; returns {id: final json}."""
    pending, final = set(ids), {}
    deadline = time.monotonic() + SETTLE_TIMEOUT
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.admin_key}"
    while pending and time.monotonic() < deadline:
        for image_id in sorted(pending):
            r = session.get(f"{server.base}/v1/images/{image_id}", timeout=60)
            body = r.json() if r.status_code == 200 else {"status": f"HTTP {r.status_code}"}
            if body["status"] not in ("queued", "processing"):
                final[image_id] = body
                pending.discard(image_id)
        if pending:
            time.sleep(0.5)
    for image_id in pending:
        final[image_id] = {"status": "stuck"}
    return final


def check_error_shape(status, body, request_id):
    return (isinstance(body, dict) and isinstance(body.get("error"), dict)
            and ERROR_CODES.get(body["error"].get("code")) == status and bool(body["error"].get("message"))
            and body["error"].get("request_id") == request_id)


@pytest.mark.slow
def test_corpus_sweep(server):
    key = server.create_key("uploader", name="corpus")
    valid, corrupt = corpus_files("valid"), corpus_files("corrupt")
    assert len(valid) > 400 and len(corrupt) > 100
    answers = upload_all(server, key, valid + corrupt)

    problems, accepted = [], {}
    for path, (status, body, *rest) in answers.items():
        name, request_id = rel(path), (rest[0] if rest else None)
        if status is None:
            problems.append(f"{name}: no answer ({body})")
        elif status == 201:
            accepted[body["id"]] = path
            if name in MUST_REFUSE:
                problems.append(f"{name}: accepted, but must be refused ({MUST_REFUSE[name]})")
        elif status >= 500:
            problems.append(f"{name}: {status} {body}")
        elif not check_error_shape(status, body, request_id):
            problems.append(f"{name}: {status} without the error JSON shape: {body}")
        elif name.startswith("valid/"):
            if name in DECODER_LIMITS:
                if status not in (415, 422):
                    problems.append(f"{name}: {status} {body['error']['message']}")
            elif status != 415:
                problems.append(f"{name}: {status} {body['error']['message']}")
            elif Path(name).suffix.lower() in MUST_ACCEPT:
                problems.append(f"{name}: refused {status} ({body['error']['message']}), but the decoders read it")
        elif not 400 <= status < 500:
            problems.append(f"{name}: {status}")

    final = settle(server, accepted)
    for image_id, body in final.items():
        if body["status"] != "processed":
            problems.append(f"{rel(accepted[image_id])}: accepted as {image_id}, ended {body['status']}"
                            f" {body.get('error') or ''}")

    # Nothing stored for refusals: one row and one original per accepted upload, no more.
    assert server.scalar("SELECT count(*) FROM images") == str(len(accepted))
    originals = {p.parent.name for p in server.blob_files() if p.name == "original"}
    assert originals == set(accepted), f"originals without a 201: {sorted(originals - set(accepted))[:10]}"
    assert server.spool_files() == [], "refused uploads left spool files"

    assert server.get("/livez", key=False).status_code == 200, "the server died during the sweep"
    hwm = server.vm_hwm_bytes()
    assert hwm < MAX_RSS, f"peak RSS {hwm / 2**20:.0f} MiB over {MAX_RSS / 2**20:.0f} MiB"
    print(f"\ncorpus sweep: {len(answers)} files, {len(accepted)} accepted, peak RSS {hwm / 2**20:.0f} MiB")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(sorted(problems))
