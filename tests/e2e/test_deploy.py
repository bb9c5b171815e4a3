"""deploy/: the Kubernetes manifests pass the Kubernetes and KEDA schemas and imgpipe's own rules (non-root,
read-only root filesystem, probes, default-deny network), and the HAProxy config is valid. The checker itself must
refuse a manifest that breaks them, or passing would prove nothing."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "check-deploy"


def check(*files):
    return subprocess.run([str(CHECK), *map(str, files)], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_manifests_and_haproxy_config_are_valid():
    p = check()
    assert p.returncode == 0, p.stderr + p.stdout
    assert "objects checked against Kubernetes" in p.stdout and ": ok" in p.stdout


def test_the_checker_refuses_broken_manifests(tmp_path):
    gateway = (REPO / "deploy/k8s/gateway.yaml").read_text()
    broken = tmp_path / "gateway.yaml"
    misspelt = "terminationGracePeriodSeconds: 30\n      hostNetwrok: true"
    broken.write_text(gateway.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
                      .replace("terminationGracePeriodSeconds: 30", misspelt)
                      .replace("path: /readyz", "path: /ready"))
    config = tmp_path / "configmap.yaml"
    config.write_text((REPO / "deploy/k8s/configmap.yaml").read_text().replace('backend = "s3"', 'backend = "ftp"'))
    scaled = tmp_path / "worker-scaledobject.yaml"
    scaled.write_text((REPO / "deploy/k8s/worker-scaledobject.yaml").read_text()
                      .replace("minReplicaCount: 1", "minReplicaCount: one"))
    rest = [f for f in sorted((REPO / "deploy/k8s").glob("*.yaml"))
            if f.name not in ("gateway.yaml", "worker-scaledobject.yaml", "configmap.yaml")]
    p = check(*rest, broken, scaled, config)
    assert p.returncode != 0
    assert "readOnlyRootFilesystem" in p.stderr, p.stderr
    assert "hostNetwrok" in p.stderr, p.stderr                # strict: an unknown (misspelt) field
    assert "readinessProbe on /readyz" in p.stderr, p.stderr
    assert "ScaledObject/imgpipe-worker" in p.stderr, p.stderr  # KEDA's schema: an integer
    assert "imgpipe config check refuses" in p.stderr and "storage.backend" in p.stderr, p.stderr


def test_the_container_image_has_every_library_imgpipe_loads(tmp_path):
    from support import IMGPIPE_BIN
    checker = [sys.executable, str(REPO / "deploy/check_containerfile.py"), "--imgpipe", str(IMGPIPE_BIN)]
    p = subprocess.run(checker, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    # A runtime image without libpq5 (PostgreSQL's client library) would fail at start: the checker must say so.
    containerfile = (REPO / "deploy/Containerfile").read_text()
    assert " libpq5 " in containerfile
    broken = tmp_path / "Containerfile"
    broken.write_text(containerfile.replace(" libpq5 ", " "))
    p = subprocess.run([*checker, "--containerfile", str(broken)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "lacks libpq.so.5: add libpq5" in p.stderr, p.stderr
