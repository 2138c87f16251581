"""What the deployment tests share: the manifests' folder, the Kubernetes versions they are checked against, and
reading them (as written, or rendered by Kustomize)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

DEPLOY = ROOT / "deploy"
# The oldest Kubernetes the manifests are written for, and the newest schemas kubernetes-validate ships.
K8S_OLDEST = "1.29.0"
CRDS = ("monitoring.coreos.com/",)  # no schema in kubernetes-validate: checked semantically by the tests


def load_kustomization(root: Path) -> list[dict[str, Any]]:
    """Every document of the resources `root/kustomization.yaml` lists (directories: their own kustomization),
    read with PyYAML as written, without Kustomize's transformations."""
    kust = yaml.safe_load((root / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = (root / res).resolve()
        if path.is_dir():
            docs += load_kustomization(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs



def kustomize(root: Path) -> list[dict[str, Any]]:
    r = subprocess.run(["kubectl", "kustomize", str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]



def serve_flag(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from the container args {args}"
    return args[args.index(flag) + 1]
