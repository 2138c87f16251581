"""deploy/overlays/answer-vllm, validated offline as the base is (tests/deploy/test_deploy.py): rendered by Kustomize
when kubectl is on PATH, every core resource checked by kubernetes-validate, and what a schema cannot see checked
here: the server's answer flags name the video-LLM's Service, port and model name, vLLM runs a pinned image on
weights from a read-only volume with nothing downloaded, takes at least the default number of frames per request,
and only VideoITG Serve reaches it."""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest
import yaml

from tests.support.deploy import CRDS, DEPLOY, K8S_OLDEST, kustomize, load_kustomization, serve_flag
from videoitg.commands.cli import build_parser
from videoitg.outputs import DEFAULT_TOP_K

OVERLAY = DEPLOY / "overlays" / "answer-vllm"
NEEDS_KUBECTL = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl (Kustomize built in) is not on PATH: the patches are not applied")


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (Kustomize built in) is not on PATH: the patches are not applied")
    return {(d["kind"], d["metadata"]["name"]): d for d in kustomize(OVERLAY)}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def test_the_overlay_lists_its_files_and_every_core_resource_is_valid() -> None:
    kust = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    own = sorted(p.name for p in OVERLAY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(r for r in kust["resources"] if not r.startswith("..")) == own
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
    docs = [d for d in load_kustomization(OVERLAY) if not d["apiVersion"].startswith(CRDS)]
    for version in (K8S_OLDEST, kv.latest_version()):
        for d in docs:
            try:
                kv.validate(d, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{d['kind']}/{d['metadata']['name']} invalid for Kubernetes {version}: {e.message} "
                            f"at {list(e.absolute_path)}")


@NEEDS_KUBECTL
def test_the_rendered_overlay_is_valid_and_complete(rendered) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
    for d in rendered.values():
        if not d["apiVersion"].startswith(CRDS):
            kv.validate(d, K8S_OLDEST, strict=True)
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == "videoitg"
    assert {("Deployment", "videoitg-serve"), ("Deployment", "video-llm"), ("Service", "video-llm"),
            ("PersistentVolumeClaim", "video-llm-weights"), ("NetworkPolicy", "video-llm")} <= set(rendered)


@NEEDS_KUBECTL
def test_the_answer_endpoint_is_wired_to_the_video_llm(rendered) -> None:
    args = _container(rendered["Deployment", "videoitg-serve"])["args"]
    ns = build_parser(["serve"]).parse_args(["serve", "--host", "0.0.0.0", *args])  # `videoitg serve` takes them
    upstream = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/v1", ns.answer_upstream)
    assert upstream is not None, ns.answer_upstream
    svc = rendered["Service", upstream[1]]
    (port,) = svc["spec"]["ports"]
    assert port["port"] == int(upstream[2])
    vllm = rendered["Deployment", "video-llm"]
    assert svc["spec"]["selector"].items() <= vllm["spec"]["template"]["metadata"]["labels"].items()
    c = _container(vllm)
    assert {p["name"]: p["containerPort"] for p in c["ports"]}[port["targetPort"]] == port["port"]
    assert serve_flag(c["args"], "--port") == str(port["port"])
    assert serve_flag(c["args"], "--served-model-name") == ns.answer_model


@NEEDS_KUBECTL
def test_vllm_runs_a_pinned_image_on_local_weights_and_takes_the_frames(rendered) -> None:
    vllm = rendered["Deployment", "video-llm"]
    pod, c = vllm["spec"]["template"]["spec"], _container(vllm)
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", c["image"]), c["image"]
    assert c["command"] == ["vllm", "serve"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    model = c["args"][0]
    assert mounts[model]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    claim = vols[mounts[model]["name"]]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    assert rendered["PersistentVolumeClaim", claim["claimName"]]["spec"]["accessModes"] == ["ReadOnlyMany"]
    # Writable only where caches go; the namespace enforces the restricted Pod Security Standard.
    assert {p for p, m in mounts.items() if not m.get("readOnly")} == {"/tmp", "/dev/shm"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"] and pod["enableServiceLinks"] is False
    limits = json.loads(serve_flag(c["args"], "--limit-mm-per-prompt"))
    assert limits["image"] >= DEFAULT_TOP_K
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"


@NEEDS_KUBECTL
def test_only_the_server_reaches_the_video_llm_and_the_server_reaches_only_it(rendered) -> None:
    server_labels = rendered["Deployment", "videoitg-serve"]["spec"]["template"]["metadata"]["labels"]
    llm_labels = rendered["Deployment", "video-llm"]["spec"]["template"]["metadata"]["labels"]
    llm = rendered["NetworkPolicy", "video-llm"]["spec"]
    assert llm["podSelector"]["matchLabels"].items() <= llm_labels.items() and llm["egress"] == []
    (rule,) = llm["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= server_labels.items()
    assert [p["port"] for p in rule["ports"]] == [8000]
    egress = rendered["NetworkPolicy", "videoitg-serve"]["spec"]["egress"]
    to_llm, dns = egress
    assert to_llm["to"][0]["podSelector"]["matchLabels"].items() <= llm_labels.items()
    assert [p["port"] for p in to_llm["ports"]] == [8000]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
