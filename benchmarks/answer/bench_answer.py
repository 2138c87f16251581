"""Select, then answer: what the answer endpoint adds, and the prompt it saves.

    python -m benchmarks.answer.bench_answer [--reps 8] [--top-k 32] [--frame-size 448] [--max-tokens 16]
                                             [--json out.json]

One `videoitg serve` (CPU repository of the embedded tiny checkpoint) with `--answer-upstream` pointing at a real
OpenAI-compatible server: `transformers serve` with a tiny random LLaVA (benchmarks/answer/vlm.py; the same upstream as
the tests). One synthetic camera-like clip (3 min, 640x360, 4 fps: 180 frames sampled at 1 fps).
- (a) Interleaved per repetition, so machine load hits each alike: the endpoint (`POST /v1/chat/completions` on the
  server's HTTP port) with the video named by a `file://` URL under the server's media root | the same K frames sent
  to the video-LLM directly (the request the endpoint forwards, rebuilt from the server's own frames), with the
  openai SDK as a user would, and as prebuilt JSON bytes (the floor: no client-side encoding) | the selection
  alone (a KServe v2 request asking for the top-K frames as JPEGs, what the endpoint sends tritonserver) | the
  endpoint with the video in the request as a data URL. The endpoint's added time is its wall time minus its
  selection time (`videoitg.select_s` of its answer: reading the video, the grounding request, the frames), against
  the direct call: goal <= 1.05x. A data URL adds the video's upload and its base64 and JSON on both sides.
- (b) The video-LLM's prompt tokens (`usage.prompt_tokens`) with the K selected frames against the uniform 64 and 128
  frames of the video a user would otherwise send (same size, same labels).
Every request is non-streamed, greedy (temperature 0) with the same `max_tokens`, so the endpoint's and the direct
call's generations are the same tokens.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from openai import OpenAI

from benchmarks.answer.vlm import IMAGE_TOKENS, build_tiny_vlm, serve_vlm
from benchmarks.clips import write_natural_clip
from videoitg.answer.chat import forwarded, forwarded_bytes, parse_chat, selection_of
from videoitg.answer.handoff import frame_parts
from videoitg.client.kserve import VideoITGClient
from videoitg.decode import decode_full_frames, probe_video
from videoitg.decode.export import jpeg_bytes, resize_longer_side
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec, build_repository
from videoitg.request.options import RequestOptions

QUESTION = "What happens in the video? A. B. C. D."


def clip(out: Path) -> Path:
    return write_natural_clip(out, frames=720, width=640, height=360, fps=4, gop=40)


def chat(url: str, top_k: int, size: int, model: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                      {"type": "text", "text": QUESTION}]}],
            "videoitg": {"top_k": top_k, "frame_size": size}}


def uniform_request(video: Path, n: int, size: int, model: str) -> dict[str, Any]:
    """`n` frames spread evenly over the video, labelled as the endpoint labels its frames, then the question."""
    info = probe_video(video)
    count = info.total_frames
    numbers = [round(i * (count - 1) / max(n - 1, 1)) for i in range(n)]
    images = decode_full_frames(video, numbers)
    parts = frame_parts((k, k / info.fps, jpeg_bytes(resize_longer_side(im, size))) for k, im in zip(numbers, images,
                                                                                                   strict=True))
    parts.append({"type": "text", "text": QUESTION})
    return {"model": model, "temperature": 0, "max_tokens": 1, "messages": [{"role": "user", "content": parts}]}


def timed(f: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--frame-size", type=int, default=448)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    k, size = args.top_k, args.frame_size
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        video = clip(work / "clip.mp4")
        vlm = stack.enter_context(serve_vlm(build_tiny_vlm(work / "vlm"), work / "vlm.log"))
        repo = build_repository(RepoSpec(target="cpu", media_roots=(str(work.resolve()),)), work / "repo")
        srv = TritonServer(repo, ServerOptions(answer_upstream=vlm.base_url), log_path=work / "tritonserver.log")
        srv.start()
        stack.callback(srv.stop)
        endpoint = OpenAI(base_url=f"http://{srv.http_url}/v1", api_key="-", timeout=600, max_retries=0)
        direct = OpenAI(base_url=vlm.base_url, api_key="-", timeout=600, max_retries=0)
        grounding = stack.enter_context(VideoITGClient(srv.grpc_url))
        body = chat(video.resolve().as_uri(), k, size, vlm.model, args.max_tokens)
        inline = chat("data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode(), k, size, vlm.model,
                      args.max_tokens)

        def via(request: dict[str, Any]) -> dict[str, Any]:
            fields = {key: v for key, v in request.items() if key != "videoitg"}
            return endpoint.chat.completions.create(**fields, extra_body={"videoitg": request["videoitg"]}
                                                    ).model_dump()

        def via_endpoint() -> dict[str, Any]:
            return via(body)

        def select() -> Any:
            served = grounding.infer(video, QUESTION, RequestOptions(top_k=k, frames="jpeg", frame_size=size))
            return selection_of(served.result, served.top_k_frames, served.frames, served.moments, 0.0)

        sel = select()
        fwd = forwarded(parse_chat(body), sel)
        fwd_bytes = forwarded_bytes(parse_chat(body), sel)
        raw = http.client.HTTPConnection("127.0.0.1", vlm.port, timeout=600)  # one keep-alive connection
        stack.callback(raw.close)

        def via_direct() -> dict[str, Any]:
            return direct.chat.completions.create(**fwd).model_dump()

        def via_direct_raw() -> dict[str, Any]:
            try:
                raw.request("POST", "/v1/chat/completions", fwd_bytes, {"Content-Type": "application/json"})
            except (BrokenPipeError, ConnectionResetError):  # the server closed it while idle: open it again
                raw.close()
                raw.request("POST", "/v1/chat/completions", fwd_bytes, {"Content-Type": "application/json"})
            r = raw.getresponse()
            data = r.read()
            assert r.status == 200, data[:200]
            return json.loads(data)

        first = via_endpoint()  # warm: the feature cache, the upstream's first request
        assert first["videoitg"]["frames"] == sel.frames, "the endpoint picked other frames than the server"
        assert via(inline)["videoitg"]["frames"] == sel.frames
        video_mb = video.stat().st_size / 1e6
        via_direct()
        rows = []
        for _ in range(args.reps):
            t_e, a_e = timed(via_endpoint)
            t_d, a_d = timed(via_direct)
            t_r, _ = timed(via_direct_raw)
            t_s, _ = timed(select)
            t_i, a_i = timed(lambda: via(inline))
            assert a_e["choices"][0]["message"]["content"] == a_d["choices"][0]["message"]["content"]
            rows.append({"endpoint_s": t_e, "select_s": a_e["videoitg"]["select_s"], "direct_s": t_d,
                         "direct_raw_s": t_r, "selection_alone_s": t_s, "endpoint_data_url_s": t_i,
                         "data_url_select_s": a_i["videoitg"]["select_s"]})
        med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        # Per repetition, then the median: the machine's load moves every series together within a repetition.
        ratio = statistics.median((r["endpoint_s"] - r["select_s"]) / r["direct_s"] for r in rows)
        ratio_raw = statistics.median((r["endpoint_s"] - r["select_s"]) / r["direct_raw_s"] for r in rows)
        ratio_inline = statistics.median((r["endpoint_data_url_s"] - r["data_url_select_s"]) / r["direct_s"]
                                         for r in rows)
        tokens = {"selected": first["usage"]["prompt_tokens"]}
        for n in (64, 128):
            tokens[f"uniform_{n}"] = direct.chat.completions.create(**uniform_request(video, n, size, vlm.model)
                                                                   ).usage.prompt_tokens
    result = {"reps": args.reps, "top_k": k, "frame_size": size, "max_tokens": args.max_tokens, "video_mb": video_mb,
              "median": med, "endpoint_minus_selection_over_direct": ratio,
              "endpoint_minus_selection_over_direct_raw": ratio_raw,
              "data_url_endpoint_minus_selection_over_direct": ratio_inline,
              "endpoint_over_direct_plus_selection": med["endpoint_s"] / (med["direct_s"] + med["selection_alone_s"]),
              "prompt_tokens": tokens, "image_tokens": IMAGE_TOKENS, "rows": rows}
    print(f"(a) medians over {args.reps} interleaved repetitions, K={k}, frames at {size} px, "
          f"max_tokens={args.max_tokens}:")
    print(f"    endpoint (file://) {med['endpoint_s'] * 1e3:.0f} ms, of which selection "
          f"{med['select_s'] * 1e3:.0f} ms | direct {med['direct_s'] * 1e3:.0f} ms | selection alone (KServe, "
          f"frames as JPEG) {med['selection_alone_s'] * 1e3:.0f} ms")
    print(f"    (endpoint - selection) / direct, median per repetition = "
          f"{result['endpoint_minus_selection_over_direct']:.3f}; endpoint / "
          f"(direct + selection alone) = {result['endpoint_over_direct_plus_selection']:.3f}")
    print(f"    direct as prebuilt JSON bytes (no client-side encoding of the frames) {med['direct_raw_s'] * 1e3:.0f} "
          f"ms: (endpoint - selection) / that, median per repetition = {ratio_raw:.3f}")
    print(f"    endpoint (data URL, {video_mb:.1f} MB video) {med['endpoint_data_url_s'] * 1e3:.0f} ms, of which "
          f"selection {med['data_url_select_s'] * 1e3:.0f} ms: (endpoint - selection) / direct = "
          f"{result['data_url_endpoint_minus_selection_over_direct']:.3f}")
    print(f"(b) prompt tokens: {k} selected {tokens['selected']} | uniform 64 {tokens['uniform_64']} "
          f"({tokens['selected'] / tokens['uniform_64']:.2f}x) | uniform 128 {tokens['uniform_128']} "
          f"({tokens['selected'] / tokens['uniform_128']:.2f}x); {IMAGE_TOKENS} tokens per image for this model")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
