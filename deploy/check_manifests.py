"""Checks deploy/k8s: every object against the Kubernetes API schema of a release (kubernetes-validate, strict:
unknown fields are errors) or, for KEDA's kinds, against KEDA's own CRD schema; then the properties imgpipe's
deployment promises (docs/OPERATIONS.md, "Kubernetes"): non-root, read-only root filesystem, no privilege
escalation, probes on /livez and /readyz, memory limits, a default-deny NetworkPolicy, one sweeper at a time.

    python3 deploy/check_manifests.py --k8s-version 1.33.0 --crd KEDA_CRD.yaml... deploy/k8s/*.yaml

Exit 0 when everything holds; otherwise each problem on stderr ("file: kind/name: what") and exit 1. Run by
scripts/check-deploy, which installs the validator and fetches KEDA's CRDs.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent


def crd_schemas(paths):
    """(apiVersion, kind) -> the openAPIV3Schema of each served version of the CRDs in `paths`."""
    out = {}
    for path in paths:
        for crd in yaml.safe_load_all(Path(path).read_text()):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def pod_specs(doc):
    kind = doc.get("kind")
    if kind == "Deployment":
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def check_pod(spec, where, kind, keyring_dir):
    problems = []
    # Every pod must see the same keyring: one of its own could not unwrap the data keys the others wrote.
    secret_volumes = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
    for c in spec.get("containers", []):
        if keyring_dir is None:
            problems.append(f"{where}: imgpipe.toml sets no encryption.keyring (nor provider pkcs11): each pod would "
                            "make a keyring of its own")
        elif keyring_dir and not any(m.get("mountPath") == keyring_dir and m.get("readOnly") is True and
                                     m.get("name") in secret_volumes for m in c.get("volumeMounts", [])):
            problems.append(f"{where}: container {c['name']} must mount the shared keyring Secret read-only at "
                            f"{keyring_dir} (encryption.keyring)")
    security = spec.get("securityContext", {})
    if security.get("runAsNonRoot") is not True or not security.get("runAsUser"):
        problems.append(f"{where}: pod must run as a non-root user (runAsNonRoot, runAsUser)")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: pod must not mount a service account token")
    for c in spec.get("containers", []):
        cs = c.get("securityContext", {})
        if cs.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: container {c['name']} needs readOnlyRootFilesystem: true")
        if cs.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: container {c['name']} needs allowPrivilegeEscalation: false")
        if "ALL" not in cs.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: container {c['name']} must drop ALL capabilities")
        if not c.get("resources", {}).get("limits", {}).get("memory"):
            problems.append(f"{where}: container {c['name']} needs a memory limit")
        if kind == "Deployment":
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
                if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                    problems.append(f"{where}: container {c['name']} needs a {probe} on {path}")
    return problems


def keyring_dir(docs):
    """The folder of encryption.keyring in the ConfigMap's imgpipe.toml; "" when keys come from an HSM or encryption
    is off (nothing to share), None when the local keyring is in its per-pod default place."""
    for _, doc in docs:
        if doc.get("kind") == "ConfigMap" and "imgpipe.toml" in doc.get("data", {}):
            encryption = tomllib.loads(doc["data"]["imgpipe.toml"]).get("encryption", {})
            if encryption.get("enabled") is False or encryption.get("provider") == "pkcs11":
                return ""
            return os.path.dirname(encryption["keyring"]) if "keyring" in encryption else None
    return ""


def config_keys():
    """The config keys documented in docs/OPERATIONS.md's table ("section.key")."""
    keys = set()
    for line in (ROOT / "docs" / "OPERATIONS.md").read_text().splitlines():
        if line.startswith("| `") and "." in line.split("`")[1]:
            keys.add(line.split("`")[1])
    return keys


def flatten(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def config_check(imgpipe, toml_text, docs, where):
    """`imgpipe config check` on the ConfigMap's file, with the Secret's variables as the pods get them."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for _, doc in docs:
        if doc.get("kind") == "Secret":
            env.update(doc.get("stringData", {}))
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(toml_text)
        f.flush()
        p = subprocess.run([imgpipe, "config", "check", "--config", f.name], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return [f"{where}: imgpipe config check refuses imgpipe.toml: {p.stderr.strip()}"]
    return []


def listener_ports(docs):
    """The public and private listener ports of the ConfigMap's imgpipe.toml (None when not set)."""
    for _, doc in docs:
        if doc.get("kind") == "ConfigMap" and "imgpipe.toml" in doc.get("data", {}):
            cfg = tomllib.loads(doc["data"]["imgpipe.toml"])
            port = lambda section: (int(cfg[section]["listen"].rsplit(":", 1)[1])
                                    if "listen" in cfg.get(section, {}) else None)
            return port("server"), port("admin")
    return None, None


def check_listener_policies(docs):
    """The load balancer may reach only the API listener, Prometheus only the private one (admin API, /metrics)."""
    public, private = listener_ports(docs)
    policies = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "NetworkPolicy"}
    problems = []
    for name, want in (("gateway-from-load-balancer", public), ("metrics-from-prometheus", private)):
        ports = {p.get("port") for rule in policies.get(name, {}).get("spec", {}).get("ingress", [])
                 for p in rule.get("ports", [])}
        if want is None or ports != {want}:
            problems.append(f"NetworkPolicy {name} allows ports {sorted(ports)}, expected only [{want}] "
                            "(server.listen for the load balancer, admin.listen for Prometheus)")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", required=True)
    ap.add_argument("--crd", action="append", default=[])
    ap.add_argument("--imgpipe", help="an imgpipe binary: the ConfigMap's imgpipe.toml is loaded with "
                                      "`imgpipe config check`, with the example Secret's variables")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    crds = crd_schemas(args.crd)
    problems = []
    docs = []
    for name in args.files:
        for doc in yaml.safe_load_all(Path(name).read_text()):
            if doc:
                docs.append((Path(name).name, doc))
    for file, doc in docs:
        where = f"{file}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        try:
            if key in crds:
                jsonschema.validate(doc.get("spec", {}), crds[key]["properties"]["spec"])
            else:
                kubernetes_validate.validate(doc, args.k8s_version, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            problems.append(f"{where}: {getattr(e, 'message', e)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: no schema for {key} in Kubernetes {args.k8s_version} ({e})")
        for spec in pod_specs(doc):
            problems += check_pod(spec, where, doc["kind"], keyring_dir(docs))
        if doc.get("kind") == "ConfigMap" and "imgpipe.toml" in doc.get("data", {}):
            known = config_keys()
            for k in flatten(tomllib.loads(doc["data"]["imgpipe.toml"])):
                if k not in known:
                    problems.append(f"{where}: imgpipe.toml sets {k}, which docs/OPERATIONS.md does not list")
            if args.imgpipe:
                problems += config_check(args.imgpipe, doc["data"]["imgpipe.toml"], docs, where)
    kinds = [(doc.get("kind"), doc) for _, doc in docs]
    if any(k == "ConfigMap" for k, _ in kinds):
        problems += check_listener_policies(docs)
    if not any(k == "NetworkPolicy" and d["spec"].get("podSelector") == {} and
               set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} and
               not d["spec"].get("ingress") and not d["spec"].get("egress") for k, d in kinds):
        problems.append("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    sweepers = [d for k, d in kinds if k == "CronJob" and "retention" in str(d)]
    if len(sweepers) != 1 or sweepers[0]["spec"].get("concurrencyPolicy") != "Forbid":
        problems.append("exactly one retention CronJob with concurrencyPolicy: Forbid is expected")
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(docs)} objects checked against Kubernetes {args.k8s_version}"
          f"{' and KEDA' if crds else ''}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
