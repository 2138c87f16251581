"""Who may use a real server: `videoitg serve --api-key-file KEYS --tls-cert-file C --tls-key-file K` (a CA made
here), with the page on and a video-LLM (`transformers serve` of the tiny VLM, behind a recording relay) answering
with a key of its own. Every public route of both protocols without a key, with a wrong one and with a right one;
health and the page's files open; one answer and about one time for a missing and a wrong key; a rotation that
fails no request in flight; SIGHUP; and every client the project ships or names: its own `Client`, `videoitg score`,
`videoitg perf` (perf_analyzer's -H and SSL flags), tritonclient over HTTP and gRPC, grpc's channel credentials,
`curl --cacert`, the OpenAI client, the page in headless Chromium. No key in any log, metric or command line."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import ssl
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="the serve extra")
pytest.importorskip("tritonclient.http", reason="the serve extra")

from tests.support import require
from tests.support.access import CertFiles, key_file, make_ca, new_key
from tests.support.recording import RecordingRelay
from tests.support.server import metric_value, served, skip_without_tritonserver, wait_until
from videoitg.client.kserve import KeyRefusedError, VideoITGClient, http_request_body, request_inputs
from videoitg.commands.cli import main
from videoitg.contract.protocol import RESULT_NAMES, TOP
from videoitg.front.grpc_policy import HEALTH_METHODS, SERVICE
from videoitg.front.policy import KEY_REFUSAL
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec

require(("fastapi",), "transformers serve needs transformers[serving] (the dev extra)")
skip_without_tritonserver()
pytestmark = pytest.mark.server  # its own tritonserver: the module's tests run in one worker

KEY, ROTATED, UPSTREAM_KEY = new_key(), new_key(), "token-abc123"  # ours, the next one, the video-LLM's own
WRONG = new_key()
ASK = "When is the red circle visible?"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return key_file(tmp_path_factory.mktemp("keys") / "keys", KEY)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: CertFiles, keys: Path,
           relay: RecordingRelay) -> Iterator[TritonServer]:
    upstream_key = tmp_path_factory.mktemp("upstream") / "key"
    upstream_key.write_text(UPSTREAM_KEY + "\n")
    options = ServerOptions(api_key_file=str(keys), tls_cert_file=str(ca.cert), tls_key_file=str(ca.key),
                            answer_upstream=f"http://127.0.0.1:{relay.port}/v1", answer_api_key_file=str(upstream_key))
    yield from served(RepoSpec(target="cpu"), tmp_path_factory, options)


def https(server: TritonServer, ca: CertFiles, method: str, path: str, key: str | None = None,
          body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request over TLS on a new connection: (status, headers, body)."""
    host, _, port = server.http_url.rpartition(":")
    conn = http.client.HTTPSConnection(host, int(port), timeout=120,
                                       context=ssl.create_default_context(cafile=str(ca.ca)))
    try:
        sent = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
        conn.request(method, path, body=body, headers=sent)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def infer_body(video: bytes) -> tuple[bytes, dict[str, str]]:
    pieces, headers = http_request_body(video, ASK)
    return b"".join(pieces), headers


def chat_body(video: bytes, model: str) -> bytes:
    url = "data:video/mp4;base64," + base64.b64encode(video).decode()
    return json.dumps({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": ASK}]}]}).encode()


def test_every_http_route_wants_a_key_but_health_and_the_pages_files(server: TritonServer, ca: CertFiles,
                                                                     sample: tuple[Path, bytes, str], vlm) -> None:
    body, headers = infer_body(sample[1])
    json_type = {"Content-Type": "application/json"}
    wanted = [("GET", "/v2", None, {}, 200), ("GET", f"/v2/models/{TOP}", None, {}, 200),
              ("GET", f"/v2/models/{TOP}/versions/1", None, {}, 200),
              ("GET", f"/v2/models/{TOP}/config", None, {}, 200), ("GET", f"/v2/models/{TOP}/stats", None, {}, 200),
              ("GET", "/v2/models/videoitg_decode", None, {}, 200),
              ("POST", f"/v2/models/{TOP}/infer", body, headers, 200), ("GET", "/v1/models", None, {}, 200),
              ("POST", "/v1/chat/completions", chat_body(sample[1], vlm.model), json_type, 200),
              ("POST", "/v2/repository/index", b"{}", json_type, 404), ("GET", "/nope", None, {}, 404),
              ("OPTIONS", "/", None, {}, 404), ("POST", "/page.js", b"", {}, 404),
              ("POST", "/v2/models/videoitg_decode/infer", b"{}", json_type, 404)]
    for method, path, data, extra, right in wanted:
        missing = https(server, ca, method, path, None, data, extra)
        wrong = https(server, ca, method, path, WRONG, data, extra)
        assert missing[0] == wrong[0] == 401, (method, path, missing[:1], wrong[:1])
        assert missing[2] == wrong[2] and missing[1]["www-authenticate"] == "Bearer", (method, path)
        assert {k: v for k, v in missing[1].items() if k != "date"} == {k: v for k, v in wrong[1].items()
                                                                         if k != "date"}
        got = https(server, ca, method, path, KEY, data, extra)
        assert got[0] == right, (method, path, got[0], got[2][:300])
    assert json.loads(https(server, ca, "GET", "/v2")[2]) == {"error": KEY_REFUSAL}
    for method, path in [("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("GET", f"/v2/models/{TOP}/ready"),
                         ("GET", "/"), ("HEAD", "/"), ("GET", "/page.js"), ("GET", "/page.css")]:
        assert https(server, ca, method, path)[0] == 200, (method, path)  # probes and the page need no secret
    assert b'"keys": true' in https(server, ca, "GET", "/")[2]  # the page asks for a key
    with urllib_metrics(server, ca) as text:  # the metrics port: TLS, no key (a scraper holds no secret)
        assert metric_value(text, "videoitg_front_api_key", protocol="http", outcome="missing") >= len(wanted)
        assert metric_value(text, "videoitg_front_api_key", protocol="http", outcome="wrong") >= len(wanted)


@contextlib.contextmanager
def urllib_metrics(server: TritonServer, ca: CertFiles) -> Iterator[str]:
    import urllib.request

    url = server.metrics_url
    assert url.startswith("https://")
    with urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context(cafile=str(ca.ca))) as r:
        yield r.read().decode()


def grpc_client(server: TritonServer, ca: CertFiles):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(ca.ca))


def test_every_grpc_method_wants_a_key_but_health(server: TritonServer, ca: CertFiles,
                                                  sample: tuple[Path, bytes, str]) -> None:
    """tritonclient's gRPC client with `ssl=True` and the CA, the key as its headers."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpc_client(server, ca) as c:
        inputs = request_inputs(grpcclient, sample[1], ASK)
        calls = {"ServerLive": lambda h: c.is_server_live(headers=h), "ServerReady": lambda h: c.is_server_ready(
                     headers=h), "ModelReady": lambda h: c.is_model_ready(TOP, headers=h),
                 "ServerMetadata": lambda h: c.get_server_metadata(headers=h),
                 "ModelMetadata": lambda h: c.get_model_metadata(TOP, headers=h),
                 "ModelConfig": lambda h: c.get_model_config(TOP, headers=h),
                 "ModelStatistics": lambda h: c.get_inference_statistics(TOP, headers=h),
                 "ModelInfer": lambda h: c.infer(TOP, inputs, headers=h)}
        for method, call in calls.items():
            answers = {}
            for given, headers in (("none", None), ("wrong", {"authorization": f"Bearer {WRONG}"}),
                                   ("right", {"authorization": f"Bearer {KEY}"})):
                try:
                    answers[given] = ("OK", call(headers))
                except InferenceServerException as e:
                    answers[given] = (e.status(), e.message())
            if method in HEALTH_METHODS:
                assert answers["none"][0] == answers["wrong"][0] == "OK", (method, answers)
            else:
                assert answers["none"] == answers["wrong"] == ("StatusCode.UNAUTHENTICATED", KEY_REFUSAL), method
            assert answers["right"][0] == "OK", (method, answers["right"])
        served = answers["right"][1]
        assert {o.name for o in served.get_response().outputs} >= set(RESULT_NAMES)


def test_grpcs_own_channel_credentials_and_metadata(server: TritonServer, ca: CertFiles) -> None:
    import grpc
    from tritonclient.grpc import service_pb2

    creds = grpc.ssl_channel_credentials(root_certificates=ca.ca.read_bytes())
    with grpc.secure_channel(server.grpc_url, creds) as channel:
        metadata = channel.unary_unary(f"/{SERVICE}/ServerMetadata")
        request = service_pb2.ServerMetadataRequest().SerializeToString()
        with pytest.raises(grpc.RpcError) as e:
            metadata(request, timeout=30)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and e.value.details() == KEY_REFUSAL
        raw = metadata(request, timeout=30, metadata=(("authorization", f"Bearer {KEY}"),))
        assert service_pb2.ServerMetadataResponse.FromString(raw).name == server.server_id
    with grpc.insecure_channel(server.grpc_url) as channel:  # TLS is not optional
        with pytest.raises(grpc.RpcError) as e:
            channel.unary_unary(f"/{SERVICE}/ServerLive")(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tritonclients_http_client_over_tls_with_the_key_as_a_header(server: TritonServer, ca: CertFiles,
                                                                     sample: tuple[Path, bytes, str]) -> None:
    import functools

    import gevent.ssl
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    factory = functools.partial(gevent.ssl.create_default_context, cafile=str(ca.ca))
    with httpclient.InferenceServerClient(server.http_url, ssl=True, ssl_context_factory=factory) as c:
        assert c.is_server_ready()
        inputs = request_inputs(httpclient, sample[1], ASK)
        with pytest.raises(InferenceServerException) as e:
            c.infer(TOP, inputs)
        assert e.value.status() == "401" and e.value.message() == KEY_REFUSAL
        r = c.infer(TOP, inputs, headers={"Authorization": f"Bearer {KEY}"})
        assert r.as_numpy(RESULT_NAMES[0]) is not None


def test_the_projects_client_and_its_words_for_a_refused_key(server: TritonServer, ca: CertFiles, keys: Path,
                                                             sample: tuple[Path, bytes, str]) -> None:
    path, _, instruction = sample
    results = []
    for url, protocol in ((server.grpc_url, "grpc"), (server.http_url, "http")):
        with VideoITGClient(url, protocol, api_key_file=keys, ca_file=ca.ca) as c:
            results.append(c.score(path, instruction))
        with VideoITGClient(url, protocol, ca_file=ca.ca, access=None) as c, pytest.raises(KeyRefusedError) as e:
            c.score(path, instruction)
        assert "the server wants an API key" in str(e.value) and "--api-key-file" in str(e.value)
        with VideoITGClient(url, protocol, api_key=WRONG, ca_file=ca.ca) as c, pytest.raises(KeyRefusedError) as e:
            c.model_parameters()
        assert "refused the API key sent" in str(e.value) and WRONG not in str(e.value)
    np.testing.assert_allclose(results[0].logits, results[1].logits, rtol=0, atol=1e-5)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_score_through_the_server_with_a_key_file_and_a_ca(server: TritonServer, ca: CertFiles, keys: Path,
                                                           sample: tuple[Path, bytes, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, instruction = sample
    for url, protocol in ((server.grpc_url, "grpc"), (server.http_url, "http")):
        rc, out, err = run_cli("score", str(path), "-i", instruction, "--server", url, "--protocol", protocol,
                               "--api-key-file", str(keys), "--ca-file", str(ca.ca))
        assert rc == 0 and "sampled frames" in out, err
        rc, _, err = run_cli("score", str(path), "-i", instruction, "--server", url, "--protocol", protocol,
                             "--ca-file", str(ca.ca))
        assert rc == 2 and "the server wants an API key" in err, err
        rc, _, err = run_cli("score", str(path), "-i", instruction, "--server", url, "--protocol", protocol,
                             "--api-key-file", str(keys))
        assert rc == 2 and "speaks TLS: give --ca-file" in err, err
    monkeypatch.setenv("VIDEOITG_API_KEY", KEY)  # the variable, where no file is given
    rc, out, err = run_cli("score", str(path), "-i", instruction, "--server", server.grpc_url, "--ca-file", str(ca.ca))
    assert rc == 0, err


def test_perf_analyzer_through_videoitg_perf_with_the_key_and_tls(server: TritonServer, ca: CertFiles, keys: Path,
                                                                  sample: tuple[Path, bytes, str],
                                                                  tmp_path: Path) -> None:
    metrics = server.metrics_url.split("://", 1)[1].removesuffix("/metrics")
    for url, protocol in ((server.grpc_url, "grpc"), (server.http_url, "http")):
        out = tmp_path / protocol
        rc, text, err = run_cli("perf", str(sample[0]), "--server", url, "--protocol", protocol, "--metrics", metrics,
                                "--concurrency", "1", "--cold-requests", "2", "--api-key-file", str(keys),
                                "--ca-file", str(ca.ca), "--out", str(out))
        assert rc == 0, (text[-2000:], err[-2000:])
        report = json.loads((out / "perf.json").read_text())
        (row,) = report["series"]["cold"]["rows"]
        assert row["infer_per_s"] > 0 and report["series"]["cold"]["cache_during_measurement"]["misses"] >= 2
        assert KEY not in (out / "perf.json").read_text()


def test_the_batch_scorer_and_its_check_before_ray(server: TritonServer, ca: CertFiles, keys: Path,
                                                   sample: tuple[Path, bytes, str]) -> None:
    """`videoitg batch --server` checks the key before Ray starts (exit 2, the client's words); each worker's scorer
    reads the key file it is named (the spec holds the path, never the key: the run's summary records the spec)."""
    from videoitg.batch.scorers import ScorerSpec
    from videoitg.batch.servers import TritonScorer
    from videoitg.manifest.rows import Row

    manifest = keys.parent / "manifest.jsonl"
    manifest.write_text(json.dumps({"video": str(sample[0]), "instruction": ASK}) + "\n")
    rc, _, err = run_cli("batch", str(manifest), "--out", str(keys.parent / "out"), "--server", server.grpc_url,
                         "--ca-file", str(ca.ca), "--allow-root", str(sample[0].parent))
    assert rc == 2 and "the server wants an API key" in err, err
    spec = ScorerSpec(kind="triton", servers=(server.grpc_url,), api_key_file=str(keys), ca_file=str(ca.ca))
    assert KEY not in repr(spec) and KEY not in json.dumps(spec.__dict__, default=str)
    out = TritonScorer(spec).score_unit([Row("r0", 1, str(sample[0]), ASK, doc_id=0)])
    assert [o.ok for o in out] == [True], out[0].record


def test_the_answer_command_through_the_server(server: TritonServer, ca: CertFiles, keys: Path, relay: RecordingRelay,
                                               sample: tuple[Path, bytes, str], tmp_path: Path) -> None:
    """`videoitg answer --server` picks the frames through the keyed server and sends the video-LLM its own key."""
    upstream_key = tmp_path / "upstream"
    upstream_key.write_text(UPSTREAM_KEY + "\n")
    relay.clear()
    rc, out, err = run_cli("answer", str(sample[0]), "-q", ASK, "--upstream", f"http://127.0.0.1:{relay.port}/v1",
                           "--server", server.grpc_url, "--api-key-file", str(keys), "--ca-file", str(ca.ca),
                           "--upstream-api-key-file", str(upstream_key), "--top-k", "2", "--max-tokens", "2", "--json")
    assert rc == 0 and len(json.loads(out)["videoitg"]["frames"]) == 2, err
    received = relay.received()
    assert received and all(r.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" for r in received)


def curl(ca: CertFiles, *args: str) -> tuple[str, str]:
    r = subprocess.run(["curl", "-sS", "-D", "-", "--cacert", str(ca.ca), *args], capture_output=True, text=True,
                       timeout=60)
    head, _, body = r.stdout.partition("\n\n")  # text mode: \r\n read as \n
    return head, body


def test_curl_with_the_ca_file(server: TritonServer, ca: CertFiles) -> None:
    base = f"https://{server.http_url}"
    assert curl(ca, f"{base}/v2/health/ready")[0].startswith("HTTP/1.1 200")
    head, body = curl(ca, f"{base}/v2")
    assert head.startswith("HTTP/1.1 401") and "WWW-Authenticate: Bearer" in head and KEY_REFUSAL in body
    head, body = curl(ca, "-H", f"Authorization: Bearer {KEY}", f"{base}/v2")
    assert head.startswith("HTTP/1.1 200") and json.loads(body)["name"] == server.server_id


def test_the_openai_client_with_keys_on_both_sides(server: TritonServer, ca: CertFiles, relay: RecordingRelay,
                                                   sample: tuple[Path, bytes, str]) -> None:
    """The caller's key is ours: the video-LLM (a real one, recorded) gets the operator's key and never the caller's."""
    import openai

    relay.clear()
    url = "data:video/mp4;base64," + base64.b64encode(sample[1]).decode()
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                             {"type": "text", "text": ASK}]}]
    with openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(ca.ca))) as tls:  # trusts the test CA
        client = openai.OpenAI(base_url=f"https://{server.http_url}/v1", api_key=KEY, http_client=tls, max_retries=0,
                               timeout=120)
        model = client.models.list().data[0].id
        answer = client.chat.completions.create(model=model, messages=messages, max_tokens=2,
                                                extra_body={"videoitg": {"top_k": 3, "frame_size": 64}})
        assert answer.choices[0].message.role == "assistant" and len(answer.model_extra["videoitg"]["frames"]) == 3
        stranger = openai.OpenAI(base_url=f"https://{server.http_url}/v1", api_key=WRONG, http_client=tls,
                                 max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            stranger.chat.completions.create(model=model, messages=messages)
        assert e.value.status_code == 401 and e.value.body["code"] == "api_key"
    received = relay.received()
    assert [(r.method, r.path) for r in received] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    assert all(r.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" for r in received)
    everything = b"".join(r.body + json.dumps(r.headers).encode() for r in received)
    assert KEY.encode() not in everything and WRONG.encode() not in everything


def test_a_missing_and_a_wrong_key_take_about_the_same_time(server: TritonServer, ca: CertFiles) -> None:
    """Interleaved, each on a new TLS connection; the medians within 2x or 20 ms of each other (the same code path
    answers both: the check compares the presented key, or an empty one, with every key)."""
    took: dict[str, list[float]] = {"none": [], "wrong": []}
    bodies = set()
    for i in range(60):
        for given in (("none", "wrong") if i % 2 else ("wrong", "none")):
            t0 = time.perf_counter()
            status, _, body = https(server, ca, "GET", f"/v2/models/{TOP}", None if given == "none" else WRONG)
            took[given].append(time.perf_counter() - t0)
            assert status == 401
            bodies.add(body)
    a, b = statistics.median(took["none"]), statistics.median(took["wrong"])
    assert len(bodies) == 1 and (max(a, b) < 2 * min(a, b) or abs(a - b) < 0.020), (a, b)


def test_a_rotation_fails_no_request_in_flight(server: TritonServer, ca: CertFiles, keys: Path,
                                               sample: tuple[Path, bytes, str]) -> None:
    """An inference whose headers (with the old key) arrived before the key file changed is answered; after the
    change the old key is refused and the new one taken, on both protocols; SIGHUP reads the files at once."""
    body, headers = infer_body(sample[1])
    host, _, port = server.http_url.rpartition(":")
    ctx = ssl.create_default_context(cafile=str(ca.ca))
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Authorization": f"Bearer {KEY}", "Host": "x",
                                                 "Content-Length": str(len(body))}.items())
    with socket.create_connection((host, int(port)), timeout=60) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(f"POST /v2/models/{TOP}/infer HTTP/1.1\r\n{head}\r\n".encode() + body[:100])
        time.sleep(0.5)  # the front has the headers: the key was checked
        key_file(keys, ROTATED)
        assert wait_until(lambda: https(server, ca, "GET", "/v2", KEY)[0] == 401, 10)
        s.sendall(body[100:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert https(server, ca, "GET", "/v2", ROTATED)[0] == 200
    with grpc_client(server, ca) as c:
        assert c.get_server_metadata(headers={"authorization": f"Bearer {ROTATED}"}).name == server.server_id
    # SIGHUP: read again at once (the certificate is loaded again even unchanged, and says so in the log)
    said = server.log_tail(200_000).count("TLS certificate loaded again")
    key_file(keys, KEY)
    server.reload_access()
    assert wait_until(lambda: server.log_tail(200_000).count("TLS certificate loaded again") > said, 10)
    assert https(server, ca, "GET", "/v2", KEY)[0] == 200 and https(server, ca, "GET", "/v2", ROTATED)[0] == 401


def test_the_page_with_a_key_typed(server: TritonServer, ca: CertFiles, sample: tuple[Path, bytes, str]) -> None:
    """Headless Chromium trusting the test certificate (by its key's hash): the page asks for a key, reads nothing
    without one, and scores the sample once it is typed; the key stays in the tab's sessionStorage."""
    from tests.support.browser import ID, chromium, page_state, require_browser, shown

    require_browser()
    spki = subprocess.run(f"openssl x509 -in {ca.cert} -pubkey -noout | openssl pkey -pubin -outform der | "
                          "openssl dgst -sha256 -binary | base64", shell=True, check=True, capture_output=True,
                          text=True).stdout.strip()
    with chromium(flags=(f"--ignore-certificate-errors-spki-list={spki}",)) as d:
        d.get(f"https://{server.http_url}/")
        assert wait_until(lambda: d.find_element(ID, "roots").text != "", 20)
        assert d.find_element(ID, "key-box").is_displayed()
        assert "wants an API key" in d.find_element(ID, "roots").text  # the API's own words
        d.find_element(ID, "api-key").send_keys(KEY)
        shown(d, "document.getElementById('api-key').dispatchEvent(new Event('change'))")
        assert wait_until(lambda: "could not be read" not in d.find_element(ID, "roots").text, 20)
        d.find_element(ID, "video-file").send_keys(str(sample[0]))
        d.find_element(ID, "instruction").send_keys(sample[2])
        shown(d, "document.getElementById('score').click()")
        assert wait_until(lambda: shown(d, "return document.body.dataset.state") != "busy", 90)
        assert page_state(d)[0] == "done", page_state(d)
        assert len(d.find_elements("css selector", "#thumbs img")) >= 1
        assert shown(d, "return sessionStorage.getItem('videoitg-api-key')") == KEY
        assert shown(d, "return localStorage.length") == 0  # the tab's only


def test_no_key_in_any_log_metric_or_command_line(server: TritonServer, ca: CertFiles) -> None:
    """Every key this module used, ours, the video-LLM's and the wrong ones."""
    with urllib_metrics(server, ca) as metrics:
        assert metric_value(metrics, "videoitg_front_api_key", outcome="accepted") > 0
    texts = {"log": server.log_tail(10_000_000), "metrics": metrics}
    for name, pid in (("front", server.front_pid), ("tritonserver", server.pid)):
        texts[name] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert "videoitg front: API keys" in texts["log"]
    for key in (KEY, ROTATED, WRONG, UPSTREAM_KEY):
        for name, text in texts.items():
            assert key not in text, (name, key[:6])


def test_a_plain_client_is_told_the_port_speaks_tls(server: TritonServer) -> None:
    with VideoITGClient(server.http_url, "http", api_key=KEY) as c:
        with pytest.raises(Exception, match="speaks TLS: give --ca-file"):
            c.infer(b"\x00" * 64, ASK)


def test_supervision_sees_the_front_over_tls_answering(server: TritonServer) -> None:
    """Catches: supervision looked at the front's ports over plain HTTP, which a TLS port never answers, and took a
    healthy front for a hung one (killed and started again every 15 s)."""
    looks = server.looks()
    assert looks["front"].answered and looks["tritonserver"].answered, looks
