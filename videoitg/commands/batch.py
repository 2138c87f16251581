"""`videoitg batch MANIFEST --out DIR`: score many (video, instruction) rows on Ray Data, resumably."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from videoitg.contract.access import access_from_args, add_client_flags
from videoitg.errors import InputError
from videoitg.request.options import SELECTION, add_flags, from_args
from videoitg.writes import OutputError

HELP = "score a manifest of (video, instruction) rows on Ray Data; resumable, every row exactly once"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="JSONL or CSV: video (path or file:// URI), instruction, optional doc_id / id")
    p.add_argument("--out", required=True, help="output directory (results.jsonl, errors.jsonl, shards/)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="score in-process with this checkpoint (default: the tiny one)")
    src.add_argument("--server", action="append", metavar="HOST:PORT",
                     help="score against Triton endpoint(s) instead (repeat for several)")
    p.add_argument("--allow-root", action="append", metavar="DIR",
                   help="videos must lie under one of these (default: the manifest's directory)")
    p.add_argument("--workers", type=int, default=1, help="engine actors (one model each) or client actors")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (0: CPU)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPU slots per actor (torch threads)")
    p.add_argument("--max-in-flight", type=int, default=4, help="concurrent requests per Triton client actor")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="Triton protocol for --server")
    add_client_flags(p, "the --server endpoints")
    p.add_argument("--dtype", default=None, help="model dtype (default: float16 on GPU as released, float32 on CPU)")
    add_flags(p, SELECTION, {"top_k": "not named: records hold the ranking, not the picked frames; a row may "
                             "name its own options in columns of their names (top_k, ...)",
                             "ranking_rule": "released, as the released code ranks; with --server the servers'"})
    p.add_argument("--truncate-instruction", action="store_true",
                   help="in-process: cut an instruction over the model's length budget as the released model does "
                   "(default: the row fails with the reason; a server always refuses it)")
    p.add_argument("--num-frames", type=int, default=512, help="frames sampled per video")
    p.add_argument("--target-fps", type=float, default=1.0, help="candidate frame rate before subsampling")
    p.add_argument("--sampling-rule", choices=("eval", "train"), default="eval")
    p.add_argument("--no-group", action="store_true",
                   help="do not group rows by video (each row decodes and encodes its video again)")
    p.add_argument("--max-group-rows", type=int, default=64, help="split a video's rows into units of this size")
    p.add_argument("--shard-rows", type=int, default=256, help="rows per output shard")
    p.add_argument("--flush-seconds", type=float, default=10.0, help="write a shard at least this often")
    p.add_argument("--retry-errors", action="store_true", help="rerun rows that failed in an earlier run")
    p.add_argument("--force", action="store_true", help="reuse --out even if it was made with other settings")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster ('auto', 'HOST:6379', 'ray://HOST:10001'); default: local Ray")
    p.add_argument("--ship-code", action="store_true", help="send this checkout to the cluster (runtime_env)")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (127.0.0.1) on a local run")
    p.add_argument("--object-store-mb", type=int, default=512, help="object store size of a local Ray")
    p.add_argument("--wait-for-workers-s", type=int, default=600,
                   help="fail if the worker pool has not started (models loaded) within this time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # Imported here, as in every command: `videoitg --help` answers without loading them
    from videoitg.batch.ray_env import RayOptions, ray_logs_to
    from videoitg.batch.runner import BatchOptions, SignalStop, StopRequested, run_batch
    from videoitg.batch.scorers import ScorerSpec, check_sampling_options
    from videoitg.batch.servers import ServerUnavailableError
    from videoitg.defaults import default_checkpoint
    from videoitg.manifest.rows import load_manifest

    if args.workers < 1:
        raise InputError("--workers must be >= 1")
    check_sampling_options(args.num_frames, args.target_fps, args.sampling_rule, in_process=not args.server)
    for flag, value, low in (("--max-group-rows", args.max_group_rows, 1), ("--shard-rows", args.shard_rows, 1),
                             ("--max-in-flight", args.max_in_flight, 1),
                             ("--gpus-per-worker", args.gpus_per_worker, 0)):
        if not value >= low or value == float("inf"):  # also NaN and inf
            raise InputError(f"{flag} must be a number >= {low}, got {value}")
    for flag, value in (("--cpus-per-worker", args.cpus_per_worker), ("--flush-seconds", args.flush_seconds)):
        if not 0 < value < float("inf"):
            raise InputError(f"{flag} must be a positive number, got {value}")
    options = from_args(args, SELECTION)
    if args.gpus_per_worker > 0 and args.ray_address is None and not args.server:
        from videoitg.pipeline.scorer import check_device  # torch: only for this check

        check_device("cuda")  # a local run asking for GPUs on a machine without one would wait for them forever
    manifest_path = Path(args.manifest)
    manifest = load_manifest(manifest_path, args.allow_root)
    on_gpu = args.gpus_per_worker > 0
    if not args.server and (args.api_key_file or args.ca_file or args.tls):
        raise InputError("--api-key-file, --ca-file and --tls are the servers': give --server too")
    if args.server:
        check_servers_take_key(args)
        if args.truncate_instruction:
            raise InputError("--truncate-instruction is an in-process option: a server always refuses an over-long "
                             "instruction")
        spec = ScorerSpec(kind="triton", servers=tuple(args.server), max_in_flight=args.max_in_flight,
                          num_frames=args.num_frames, target_fps=args.target_fps, rule=args.sampling_rule,
                          options=options, dtype=args.dtype or "server", protocol=args.protocol,
                          api_key_file=_absolute(args.api_key_file), ca_file=_absolute(args.ca_file), tls=args.tls)
    else:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = str(default_checkpoint())
        if not Path(checkpoint).is_dir():
            raise InputError(f"checkpoint directory {checkpoint} does not exist")
        device = "cuda" if on_gpu else "cpu"
        spec = ScorerSpec(kind="inprocess", checkpoint=str(Path(checkpoint).resolve()), device=device,
                          dtype=args.dtype,  # None: the one default for the device (ScorerSpec)
                          num_frames=args.num_frames, target_fps=args.target_fps, rule=args.sampling_rule,
                          options=options, truncate=args.truncate_instruction,
                          torch_threads=max(1, int(args.cpus_per_worker)))
    opts = BatchOptions(
        out_dir=args.out, scorer=spec,
        ray=RayOptions(address=args.ray_address, dashboard=args.dashboard, object_store_mb=args.object_store_mb,
                       ship_code=args.ship_code, wait_for_workers_s=args.wait_for_workers_s),
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        group_by_video=not args.no_group, max_group_rows=args.max_group_rows, shard_rows=args.shard_rows,
        flush_seconds=args.flush_seconds, retry_errors=args.retry_errors, force=args.force,
        progress=not args.no_progress,
    )
    print(f"batch: {len(manifest.rows)} rows over {manifest.videos} videos "
          f"({len(manifest.rejected)} rejected by the manifest check)", file=sys.stderr)
    ray_log = Path(args.out) / "ray-driver.log"
    if args.ray_address is None:
        print(f"batch: starting a local Ray (its log: {ray_log})", file=sys.stderr)
    try:
        # Ray's start-up and C++ messages go to ray_log; our progress, messages and workers' errors stay here.
        with SignalStop() as stop, ray_logs_to(ray_log):
            summary = run_batch(manifest, opts, stop)
    except (StopRequested, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, StopRequested) else signal.SIGINT
        print(f"batch: stopped by {signal.Signals(signum).name}; every finished row is saved in {args.out}; "
              "rerun the same command to resume", file=sys.stderr)
        return 128 + signum
    except OutputError as e:  # a full disk, a path of the wrong kind: written shards are whole (temp file + rename)
        print(f"batch: {e}; the rows finished before are saved in {args.out}", file=sys.stderr)
        return 1
    except OSError as e:  # a lost output mount
        print(f"batch: cannot write to {args.out}: {e.strerror or e}; finished rows are saved, "
              "rerun the same command once it is back", file=sys.stderr)
        return 1
    except ServerUnavailableError as e:
        print(f"batch: {e}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 0 if summary["merged"]["missing"] == 0 else 1


def _absolute(path: str | None) -> str | None:
    """A file each worker opens, named from the root (a worker's working directory may be another)."""
    return None if path is None else str(Path(path).absolute())


def check_servers_take_key(args: argparse.Namespace) -> None:
    """Before Ray starts: the key and CA files readable, and no server that answers refuses the key (KeyRefusedError,
    saying so); a server that does not answer now is the workers' to wait for."""
    from videoitg.client.kserve import VideoITGClient

    access = access_from_args(args)
    for url in args.server:
        with VideoITGClient(url, args.protocol, access=access) as c:
            c.model_config()  # raises KeyRefusedError; anything else (down, not there yet) is left to the workers


def _steady(s: dict) -> str:
    """The steady rate, or why there is none."""
    from videoitg.batch.runner import MIN_RATE_SPAN_S

    if not s["rows_todo"]:
        return "no rows to score (every row already done)"
    if s["startup_seconds"] is None:
        return "no row finished"
    startup = f"after {s['startup_seconds']:.1f} s start-up"
    if s["steady_rows_per_second"] is not None:
        return f"steady {s['steady_rows_per_second']:.2f} rows/s {startup}"
    return (f"steady rate not measured: the results came within {MIN_RATE_SPAN_S:g} s {startup}, too few to time")


def _print_summary(s: dict) -> None:
    m = s["merged"]
    lines = [
        f"rows ok {s['rows_ok']}, failed {s['rows_failed']} this run; already done {s['rows_already_done']}; "
        f"changed since scored (scored again) {s['rows_changed']}; rejected by manifest "
        f"{s['rows_rejected_by_manifest']}",
        f"videos {s['videos']} in {s['units']} units; cache hit rate {s['cache_hit_rate']:.1%}",
        f"throughput {s['rows_per_second']:.2f} rows/s over {s['work_seconds']:.1f} s including start-up; "
        + _steady(s) + f"; {s['workers_used']} workers answered",
        f"results.jsonl {m['results']} rows, errors.jsonl {m['errors']} rows, "
        f"duplicates dropped {m['duplicates_dropped']}, missing {m['missing']}",
    ]
    print("\n".join("batch: " + x for x in lines), file=sys.stderr)
    print(json.dumps({k: v for k, v in s.items() if k != "options"}, sort_keys=True))
