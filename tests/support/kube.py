"""The Kubernetes manifests (deploy/k8s) run by `podman kube play` beside the compose
stack, for tests/test_stack.py.

What podman can run of them: the server and gateway Deployments with their ConfigMap
and Secret (one pod per Deployment: podman ignores `replicas`). The rendered cpu
overlay is changed only where a cluster and this machine must differ, each change
named here:

- images: the ones `make images` built (localhost/...:dev) instead of ghcr.io's;
- the ConfigMap's and Secret's endpoints and credentials: the compose stack's
  PostgreSQL, Redis, MinIO and Triton (placeholders in the manifests anyway);
- the gateway's upstream: the server pod's name (no Services, so no headless-Service
  DNS, under podman);
- one replica each: podman starts a pod per replica, and a second pod of a Deployment
  failed to start here ("container state improper");
- the Secret: podman 4.3 reads a Secret only from its own secret store, as a JSON map
  of key -> base64 value (a Secret object in the YAML is stored in a form its own
  reader then refuses: "secret ... is not valid JSON"), so `secret_json` makes that
  and the YAML goes without it;
- kinds podman has no use for (Namespace, Service, HPA, PDB, NetworkPolicy, Ingress,
  KEDA, the migrate Job: the compose stack migrated the database already) are left out.

podman does not run gRPC probes, so the test runs the manifests' probes itself: the
gRPC health service for "" (readiness) and "vidscan.live" (liveness) inside the
server pod, `/healthz` inside the gateway pod.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATE = REPO_ROOT / "deploy" / "k8s" / "validate"

KEPT = {
    ("ConfigMap", "vidscan-env"),
    ("Secret", "vidscan-secrets"),
    ("Deployment", "vidscan-server"),
    ("Deployment", "vidscan-gateway"),
}
SECRET = "vidscan-secrets"


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay as `kubectl kustomize` would print it (kustomize's Go module)."""
    done = subprocess.run(
        ["go", "run", "./cmd/render", f"../overlays/{overlay}"],
        cwd=VALIDATE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"render {overlay}: {done.stderr[-2000:]}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def for_podman(
    objects: list[dict[str, Any]],
    *,
    images: dict[str, str],
    config: dict[str, str],
    secrets: dict[str, str],
    server_pod: str,
) -> tuple[list[dict[str, Any]], str]:
    """The objects podman runs, changed as the module says, and the Secret as the JSON
    podman's secret store needs."""
    kept = [o for o in objects if (o["kind"], o["metadata"]["name"]) in KEPT]
    assert len(kept) == len(KEPT), [(o["kind"], o["metadata"]["name"]) for o in kept]
    secret = next(o for o in kept if o["kind"] == "Secret")
    # Every key the manifests' Secret names is given a value for this stack.
    assert set(secret["stringData"]) == set(secrets), (set(secret["stringData"]), set(secrets))
    out = []
    for obj in kept:
        obj["metadata"].pop("namespace", None)
        if obj["kind"] == "Secret":
            continue
        if obj["kind"] == "ConfigMap":
            assert set(config) <= set(obj["data"]), set(config) - set(obj["data"])
            obj["data"].update(config)
        elif obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = 1
            for container in obj["spec"]["template"]["spec"]["containers"]:
                repository = container["image"].rsplit(":", 1)[0]
                container["image"] = images[repository]
                for entry in container.get("env", []):
                    if entry["name"] == "VIDSCAN_GATEWAY_UPSTREAM":
                        entry["value"] = f"dns:///{server_pod}:50051"
        out.append(obj)
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in secrets.items()}
    return out, json.dumps(encoded)


def dump(objects: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path
