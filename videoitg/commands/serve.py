"""`videoitg serve`: generate the model repository for a checkpoint and run a real tritonserver on it."""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from videoitg.answer.videollm import ChatUpstream, check_base_url
from videoitg.commands.repo import (
    add_deployment_arguments,
    add_limit_arguments,
    add_sampling_arguments,
    check_decoder_for,
    check_runtimes_for,
    spec_from_args,
)
from videoitg.contract.protocol import RepoSummary
from videoitg.errors import CheckpointError, InputError
from videoitg.front.config import is_loopback, page_on
from videoitg.launch.generated import GeneratedRepository
from videoitg.launch.options import check_access, own_key
from videoitg.launch.ports import StartCancelled, check_ports_free
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.launch.shm import is_stale, launcher_tag
from videoitg.launch.supervise import supervise
from videoitg.repository.generator import DEFAULT_CHECKPOINT, RepoSpec, generate

HELP = "serve a checkpoint with Triton Inference Server (HTTP, gRPC, metrics), bound to 127.0.0.1 by default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the embedded tiny one)")
    parser.add_argument("--vision-tower", default=None,
                        help="local SigLIP directory, if the checkpoint does not embed one or name a local one")
    parser.add_argument("--engines", default=None, help="engine directory from `videoitg build` (optional)")
    parser.add_argument("--target", choices=["auto", "cpu", "gpu"], default="auto",
                        help="auto: gpu when CUDA is available")
    parser.add_argument("--repo", type=Path, default=None,
                        help="write the repository here (default: a temporary directory)")
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="serve this existing repository as is (no generation; --checkpoint etc. ignored)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log", type=Path, default=None, help="server log file (default: a temporary file)")
    parser.add_argument("--verbose", action="store_true", help="verbose server log")
    parser.add_argument("--echo-log", action="store_true",
                        help="also copy the server log to stdout as it grows (containers: `kubectl logs` shows it)")
    parser.add_argument("--answer-upstream", metavar="URL",
                        help="serve select-then-answer: POST /v1/chat/completions and GET /v1/models on the HTTP port, "
                        "answered by the video-LLM at this OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1: "
                        "vLLM, SGLang, trtllm-serve) from the frames picked for the question (docs/answer.md)")
    parser.add_argument("--answer-model", metavar="NAME",
                        help="with --answer-upstream: the model name forwarded requests get (default: the client's)")
    parser.add_argument("--answer-timeout", type=float, default=300.0, metavar="S",
                        help="with --answer-upstream: the video-LLM's answer bound in seconds, in a stream between two "
                        "pieces (default 300)")
    parser.add_argument("--api-key-file", metavar="PATH",
                        help="clients need one of the keys in this file (one a line; read again when it changes or on "
                        "SIGHUP): HTTP `Authorization: Bearer KEY`, gRPC `authorization` metadata; health stays open. "
                        "Else the keys in $VIDEOITG_API_KEYS; neither: no key wanted (docs/front.md)")
    parser.add_argument("--tls-cert-file", metavar="PATH",
                        help="serve HTTP, gRPC and metrics over TLS with this PEM certificate (chain); with "
                        "--tls-key-file")
    parser.add_argument("--tls-key-file", metavar="PATH", help="the certificate's PEM private key (unencrypted)")
    parser.add_argument("--answer-api-key-file", metavar="PATH",
                        help="with --answer-upstream: the video-LLM's own key (its first line), sent as "
                        "`Authorization: Bearer`; a caller's key is never passed on while --api-key-file is set")
    parser.add_argument("--page", action=argparse.BooleanOptionalAction, default=None,
                        help="serve the page at / of the HTTP port, where a person scores a video and sees the frames "
                        "picked (docs/page.md); default: on when --host is a loopback address, off otherwise")
    add_deployment_arguments(parser)
    add_sampling_arguments(parser)
    add_limit_arguments(parser)  # ignored with --model-repository: that repository's parameters hold its limits


def resolve_target(target: str) -> str:
    if target != "auto":
        return target
    import torch  # heavy: only where a GPU must be looked for, so that `--help` stays torch-free

    return "gpu" if torch.cuda.is_available() else "cpu"


def check_gpu_present(target: str, repo: Path | None) -> None:
    """A gpu repository on a machine without CUDA: one line saying so, before tritonserver is started."""
    import torch  # heavy: see resolve_target

    if torch.cuda.is_available():
        return
    if target == "gpu":
        raise InputError("--target gpu: this machine has no CUDA GPU; serve with --target cpu")
    summary = RepoSummary.find(repo) if repo is not None else None
    if summary is not None and summary.gpu:
        raise InputError(f"{repo} is a gpu repository (KIND_GPU models) and this machine has no CUDA GPU: "
                         "generate a cpu one (videoitg repo build --target cpu)")


def echo_file(path: Path | None, stop: threading.Event, poll_s: float = 0.5) -> None:
    """Copy `path` to stdout from its start as it grows, until `stop` is set (then once more, to the end)."""
    if path is None:
        return
    with open(path, "rb") as f:
        while True:
            done = stop.is_set()
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            if done:
                return
            stop.wait(poll_s)


REPO_PREFIX = "videoitg-repo-"  # temporary repositories: videoitg-repo-<launcher tag>-<random>


def remove_stale_repositories(root: Path | None = None) -> None:
    """Temporary repositories of launchers that were killed before they could remove them."""
    for d in (root or Path(tempfile.gettempdir())).glob(f"{REPO_PREFIX}*-*"):
        if is_stale(d.name[len(REPO_PREFIX):].split("-", 1)[0]):
            shutil.rmtree(d, ignore_errors=True)


def check_checkpoint_for(spec: RepoSpec) -> None:
    """The checks each step makes when it loads, made here in seconds, before a server starts: a bad checkpoint
    is its real cause on the terminal instead of Triton's "failed to load all models"."""
    # torch-heavy: imported when a checkpoint is checked, so that `--help` stays torch-free
    from videoitg.defaults import default_checkpoint
    from videoitg.model.checkpoint import check_checkpoint

    ckpt = default_checkpoint() if spec.checkpoint == DEFAULT_CHECKPOINT else Path(spec.checkpoint)
    cfg = check_checkpoint(ckpt, spec.vision_tower or None)
    try:
        spec.limits.check_model(cfg)
    except ValueError as e:
        raise CheckpointError(f"{ckpt}: {e}") from e


def run(args: argparse.Namespace) -> int:
    # Before anything is built or loaded: ports another process holds, a checkpoint no step could load, flags that
    # go together.
    access = ServerOptions(api_key_file=args.api_key_file, tls_cert_file=args.tls_cert_file,
                           tls_key_file=args.tls_key_file, answer_api_key_file=args.answer_api_key_file)
    check_access(access)  # a key or certificate file that cannot be used is named
    check_ports_free(args.host, [args.http_port, args.grpc_port, args.metrics_port])
    if args.answer_upstream is not None:
        check_base_url(args.answer_upstream)
    elif args.answer_model is not None:
        raise InputError("--answer-model names the model of --answer-upstream: give --answer-upstream too")
    if not math.isfinite(args.answer_timeout) or args.answer_timeout <= 0:
        raise InputError(f"--answer-timeout must be > 0 seconds, got {args.answer_timeout}")
    if args.answer_api_key_file is not None and args.answer_upstream is None:
        raise InputError("--answer-api-key-file is the key of --answer-upstream's video-LLM: give --answer-upstream "
                         "too")
    if args.answer_upstream is not None:
        ChatUpstream(args.answer_upstream, key_file=args.answer_api_key_file)  # its key given once
    target = resolve_target(args.target)
    check_gpu_present(target, args.model_repository)
    tmp, generated = None, None
    if args.model_repository is not None:
        repo = args.model_repository
    else:
        spec = spec_from_args(args, target)
        check_checkpoint_for(spec)
        check_runtimes_for(spec)
        check_decoder_for(spec)
        if args.repo is None:
            remove_stale_repositories()
            tmp = Path(tempfile.mkdtemp(prefix=f"{REPO_PREFIX}{launcher_tag()}-"))
            repo = tmp
        else:
            repo = args.repo
        generated = GeneratedRepository(repo.resolve(), generate(spec, repo))  # written again if it is damaged
    opts = ServerOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                         metrics_port=args.metrics_port, gpu=target == "gpu", log_verbose=int(args.verbose),
                         answer_upstream=args.answer_upstream, answer_model=args.answer_model,
                         answer_timeout_s=args.answer_timeout, page=args.page, api_key_file=args.api_key_file,
                         tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_key_file,
                         answer_api_key_file=args.answer_api_key_file)
    server = TritonServer(repo, opts, log_path=args.log, generated=generated)
    print(f"starting tritonserver ({server.install.kind}: {server.install.binary}), {target} repository {repo}",
          flush=True)
    stopping: list[str] = []

    def _stop(signum: int, _frame: object) -> None:
        """SIGINT / SIGTERM / SIGHUP (a terminal closed): only noted; the main loop stops the server in order."""
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    keyed = args.api_key_file is not None or own_key(opts) is not None
    if keyed or args.tls_cert_file is not None:  # SIGHUP: the front reads its keys and certificate again
        signal.signal(signal.SIGHUP, lambda _signum, _frame: server.reload_access())
    else:  # SIGHUP (a terminal closed): stopped in order
        signal.signal(signal.SIGHUP, _stop)
        if not is_loopback(args.host):
            print(f"videoitg serve: --host {args.host} without --api-key-file: anyone who reaches these ports may use "
                  "them (docs/front.md, \"Keys and TLS\")", file=sys.stderr, flush=True)
    echo_stop, echo = threading.Event(), None
    try:
        try:
            server.start(cancelled=lambda: bool(stopping))  # a SIGINT or SIGTERM ends the wait for the start
        except StartCancelled:
            print(f"{stopping[0]} while tritonserver was starting: start given up, stopped", flush=True)
            return 0
        if args.echo_log:
            echo = threading.Thread(target=echo_file, args=(server.log_path, echo_stop), daemon=True)
            echo.start()
        tls = " (TLS)" if args.tls_cert_file else ""
        flags = (" --api-key-file KEYFILE" if keyed else "") + (" --ca-file CA" if args.tls_cert_file else "")
        print(f"ready: http {server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}{tls}\n"
              f"log: {server.log_path}\n"
              f"try: videoitg score VIDEO --instruction TEXT --server {server.grpc_url}{flags}"
              + (f"\npage: {server.scheme}://{server.http_url}/" if page_on(args.host, args.page) else ""),
              flush=True)

        def say(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
            server.note(msg, who="supervisor")

        # A server that exits on its own (a crash, a kill) is started again on the same ports.
        if supervise(server, lambda: bool(stopping), say):
            print(f"{stopping[0]}: stopping tritonserver", flush=True)
            t0 = time.monotonic()
            code = server.stop()
            cut = code == 1 and server.exit_timeout_expired()
            reason = ": requests still running at the exit timeout were cut" if cut else ""
            print(f"tritonserver stopped in {time.monotonic() - t0:.1f} s (exit code {code}{reason})", flush=True)
            # A stop that cancelled what was still running at the exit timeout did what it was asked to.
            return 0 if code == 0 or cut else 1
        print(f"tritonserver could not be started again; log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        echo_stop.set()
        if echo is not None:
            echo.join(timeout=5)  # the log's last lines (the stop) reach stdout too
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
