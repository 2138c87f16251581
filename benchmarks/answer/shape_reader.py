"""A video-LLM that reads the frames it is sent by a fixed rule: an OpenAI-compatible server (`POST
/v1/chat/completions`, `GET /v1/models`) that answers the generated shapes questions (`benchmarks.answer.shapes_mc`)
from the images in the request alone, so its accuracy depends only on which frames it is sent. Not a video-LLM: the
mechanism's yardstick (docs/lmms-eval.md).

The rule: in each image, every palette colour's pixels (`videoitg.synthetic.task.COLOURS`) form one shape, named by how
much of its bounding box it fills (square, circle, triangle). The question names a target ("together with the red
circle") and lettered options ("B. blue triangle"); the answer is the option seen most often in images that also
show the target (ties: the earlier letter), and the first option when no image shows the target.

    python -m benchmarks.answer.shape_reader [--port PORT]     # 127.0.0.1, until interrupted
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from videoitg.launch.ports import free_port
from videoitg.synthetic.task import COLOURS

MODEL = "shape-reader"
TOLERANCE = 40  # per channel, around a palette colour (JPEG edges and chroma stay within it)
MIN_PIXELS = 12  # fewer pixels of a colour than this: no shape
FILLS = ((0.95, "square"), (0.72, "circle"), (0.0, "triangle"))  # bounding-box fill: 1.0, 0.84-0.88, ~0.6 (as decoded)
_OPTION = re.compile(r"^([A-Z])\.\s+(\w+)\s+(\w+)\s*$", re.M)
_TARGET = re.compile(r"together with the (\w+) (\w+)")


def shapes_in(image: np.ndarray) -> set[tuple[str, str]]:
    """The (colour, kind) shapes an RGB image [H, W, 3] shows, one per palette colour at most."""
    px = image.astype(np.int16)
    found = set()
    for colour, rgb in COLOURS.items():
        mask = (np.abs(px - np.array(rgb, np.int16)) <= TOLERANCE).all(axis=2)
        n = int(mask.sum())
        if n < MIN_PIXELS:
            continue
        ys, xs = np.nonzero(mask)
        fill = n / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
        found.add((colour, next(kind for low, kind in FILLS if fill >= low)))
    return found


def read_answer(question: str, images: list[np.ndarray]) -> str:
    """The fixed rule's letter for a question about these images (module docstring)."""
    options = [(m[1], (m[2], m[3])) for m in _OPTION.finditer(question)]
    if not options:
        return ""
    target = _TARGET.search(question)
    seen: Counter[str] = Counter()
    for image in images:
        shapes = shapes_in(image)
        if target and (target[1], target[2]) in shapes:
            seen.update(letter for letter, obj in options if obj in shapes)
    if not seen:
        return options[0][0]
    best = max(seen.values())
    return next(letter for letter, _ in options if seen[letter] == best)


def _image(url: str) -> np.ndarray:
    head, _, data = url.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError(f"an image_url that is not a base64 image data URL ({head[:40]!r})")
    with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class Asked:
    """One request as the reader saw it."""

    question: str  # the text parts of the last user message, joined
    images: int
    answer: str
    body: dict = field(repr=False)


def answer_request(body: dict) -> tuple[dict, Asked]:
    """A chat-completions answer to one request body, and what was asked."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    content = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"][-1].get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": str(content)}]
    texts = [p["text"] for p in parts if p.get("type") == "text"]
    images = [_image(p["image_url"]["url"]) for p in parts if p.get("type") == "image_url"]
    question = "\n".join(texts)
    letter = read_answer(question, images)
    answer = {"id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
              "model": body.get("model") or MODEL,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": letter}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": len(images), "completion_tokens": 1, "total_tokens": len(images) + 1}}
    return answer, Asked(question, len(images), letter, body)


class ShapeReader(ThreadingHTTPServer):
    """The server on 127.0.0.1:`port`; `asked` lists every request it answered, in order."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.asked: list[Asked] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: ShapeReader
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet: the benchmark reads `asked`
        pass

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "benchmarks"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        try:
            answer, asked = answer_request(json.loads(body))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            self._send(400, {"error": {"message": f"{type(e).__name__}: {e}", "type": "invalid_request_error"}})
            return
        with self.server.lock:
            self.server.asked.append(asked)
        self._send(200, answer)


@contextlib.contextmanager
def serve_reader(port: int | None = None) -> Iterator[ShapeReader]:
    """The reader on a thread, on a free loopback port unless given; stopped after the block."""
    server = ShapeReader(port or free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="shape-reader")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=None)
    args = ap.parse_args()
    with serve_reader(args.port) as server:
        print(f"shape reader at {server.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
