"""Interop: a Python agent, speaking only the wire contract.

Generates stubs from proto/ with grpcio-tools, registers over REST (like the Python SDK, without
a bearer), streams heartbeats over gRPC, and expects an ack, then the PAUSED control frame the
server pushes after an admin pauses the workspace, then says goodbye.

usage: heartbeat_stream.py <base-url> <workspace-id> <admin-token>
"""

import importlib.resources
import json
import queue
import sys
import tempfile
import urllib.request
from pathlib import Path

import grpc
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def generate_stubs(out: Path) -> None:
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = ["google/rpc/status.proto", "molecule/v1/errors.proto", "molecule/v1/registry.proto"]
    code = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    sys.path.insert(0, str(out))


def post(url: str, body: dict, token: str | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def main() -> None:
    base, workspace_id, admin_token = sys.argv[1:4]
    generate_stubs(Path(tempfile.mkdtemp()))
    from molecule.v1 import registry_pb2, registry_pb2_grpc

    registered = post(f"{base}/registry/register",
                      {"id": workspace_id, "url": "remote://no-inbound", "agent_card": {"name": "py-agent"}})
    token = registered["auth_token"]
    print("REGISTERED", flush=True)

    outbound: queue.Queue = queue.Queue()

    def frames():
        while True:
            frame = outbound.get()
            if frame is None:
                return
            yield frame

    channel = grpc.insecure_channel(base.removeprefix("http://"))
    stub = registry_pb2_grpc.RegistryStub(channel)
    replies = stub.HeartbeatStream(
        frames(), metadata=[("x-workspace-id", workspace_id), ("authorization", f"Bearer {token}")], timeout=30
    )
    beat = registry_pb2.HeartbeatRequest(active_tasks=1, uptime_seconds=42, current_task="interop")
    outbound.put(registry_pb2.AgentFrame(beat=registry_pb2.Beat(sequence=7, heartbeat=beat)))
    ack = next(replies)
    assert ack.WhichOneof("frame") == "ack", ack
    print(f"ACK {ack.ack.sequence} {ack.ack.status}", flush=True)

    post(f"{base}/workspaces/{workspace_id}/pause", {}, admin_token)
    control = next(replies)
    assert control.WhichOneof("frame") == "control", control
    kind = registry_pb2.Control.Kind.Name(control.control.kind)
    print(f"CONTROL {kind} {control.control.event}", flush=True)

    outbound.put(registry_pb2.AgentFrame(goodbye=registry_pb2.Goodbye(reason="done")))
    outbound.put(None)
    for _ in replies:
        pass
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
