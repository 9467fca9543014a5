#!/usr/bin/env python3
"""CPU time per A2A proxy stage, from a `perf record --call-graph dwarf` profile of the server.

Reads `perf script` output on stdin. Each sample is charged to the innermost frame of its stack
that names a stage (so a memcpy inside the protobuf encoder is the gRPC hop's, a writev under
the agent dial is the relay's); samples whose stacks name no stage fall back to the runtime or
"other". With --calls and --cpu-us (from bench/a2a.sh's report) the shares become µs per call.
"""

import argparse
import re
import sys
from collections import Counter

# Innermost match wins; order only breaks ties within one frame.
STAGES = [
    ("records (activity row and event payloads, batched)", r"a2a::records|a2a::receipts|write_behind"),
    ("events", r"molecule::events|EventBus|InProcessBus|RedisBus"),
    ("metrics", r"metrics::|metrics_exporter|track_metrics|metrics_util"),
    ("normalization (JSON-RPC envelope)", r"a2a::envelope"),
    ("auth and hierarchy", r"molecule::auth|molecule::hierarchy|a2a::caller|sha2::|subtle::"),
    ("dial and relay (client to the agent)", r"a2a::upstream|hyper_util::client|hyper::client|a2a::streaming"),
    ("A2A core (pipeline, routing)", r"a2a::pipeline|a2a::service|a2a::replicas|a2a::queue"),
    ("REST->gRPC hop (encode, in-process router, decode)",
     r"tonic::|prost::|nul_guard|grpc_edge|in_process_transport|molecule::pb|::pb::|tonic_prost"),
    ("REST handler (body read, reply shaping)", r"gateway::a2a|gateway::json|gateway::forward|gateway::error"),
    ("edge middleware (guard, CORS, headers, request id, trace)",
     r"gateway::edge|gateway::preauth|gateway::client_ip|tower_http|axum::middleware|by_protocol"),
    ("HTTP server (hyper, sockets)", r"hyper::proto|hyper::server|hyper_util::server|molecule::listener|hyper::body"),
    ("datastore (SQLite/Postgres writer)", r"sqlite|sqlx|sea_orm|sea_query"),
]
FALLBACK = [
    ("tokio runtime (scheduling, timers, I/O driver)", r"tokio::|mio::"),
    ("allocator", r"mi_|mimalloc"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in STAGES]
COMPILED_FALLBACK = [(name, re.compile(pattern)) for name, pattern in FALLBACK]


def samples(lines):
    """Yields each sample's frames, leaf first."""
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line.startswith((" ", "\t")):
            # "\t    55d0c1 symbol+0x12 (/path/to/dso)"
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if frames:
        yield frames


def classify(frames):
    for frame in frames:
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    kernel = frames and "[kernel.kallsyms]" in frames[0]
    for frame in frames:
        for name, pattern in COMPILED_FALLBACK:
            if pattern.search(frame):
                return name
    return "other (kernel without a user frame, libc)" if kernel else "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu-us", type=float, help="server CPU per proxied call, in µs")
    args = parser.parse_args()
    counts = Counter()
    kernel = Counter()
    for frames in samples(sys.stdin):
        stage = classify(frames)
        counts[stage] += 1
        if "[kernel.kallsyms]" in frames[0]:
            kernel[stage] += 1
    total = sum(counts.values()) or 1
    print(f"{total} samples")
    header = "| stage | share | of which in the kernel |"
    if args.cpu_us:
        header += " µs CPU per call |"
    print(header)
    print("|---|---|---|" + ("---|" if args.cpu_us else ""))
    for stage, count in counts.most_common():
        row = f"| {stage} | {100 * count / total:.1f}% | {100 * kernel[stage] / total:.1f}% |"
        if args.cpu_us:
            row += f" {args.cpu_us * count / total:.1f} |"
        print(row)


if __name__ == "__main__":
    main()
