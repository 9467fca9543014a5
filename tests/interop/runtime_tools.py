"""The workspace runtime's platform calls, as its own modules send them.

Mirrors workspace/builtin_tools/memory.py (commit_memory, search_memory),
workspace/a2a_tools.py (tool_commit_memory, tool_recall_memory, _upload_chat_files +
tool_send_message_to_user), workspace/builtin_tools/approval.py (create, WebSocket wait,
polling fallback), workspace/prompt.py (get_platform_instructions), workspace/coordinator.py
(get_parent_context) and workspace/builtin_tools/temporal_workflow.py (checkpoints): the same
methods, paths, bodies and success checks. Where the runtime sends no credential (approval.py,
coordinator.py) this client sends `auth_headers()`, the fix docs/runtime.md records for the
runtime; everything else is byte for byte.

Usage: runtime_tools.py PLATFORM_URL WORKSPACE_ID TOKEN PARENT_ID PARENT_TOKEN
Prints one JSON object of what each tool saw; exits non-zero on any failed check.
"""

import asyncio
import json
import mimetypes
import os
import sys
import tempfile

import httpx
import websockets

PLATFORM_URL, WORKSPACE_ID, TOKEN, PARENT_ID, PARENT_TOKEN = sys.argv[1:6]


def auth_headers():
    return {"Authorization": f"Bearer {TOKEN}"}


def check(condition, what):
    if not condition:
        raise SystemExit(f"check failed: {what}")


async def memory_tools(client, seen):
    # memory.py commit_memory: success is status 201 exactly, then resp.json()["id"].
    for content, scope in [
        ("the deployment pipeline uses blue-green releases", "TEAM"),
        ("my scratch note about deployments", "LOCAL"),
    ]:
        resp = await client.post(
            f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/memories",
            json={"content": content, "scope": scope},
            headers=auth_headers(),
        )
        check(resp.status_code == 201, f"commit_memory {resp.status_code} {resp.text}")
        check(resp.json().get("id"), "commit_memory id")
    # a2a_tools.py tool_commit_memory: adds workspace_id, accepts 200 or 201.
    resp = await client.post(
        f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/memories",
        json={"content": "OPENAI_API_KEY=sk-abcdefghijklmnop1234 rotated", "scope": "LOCAL", "workspace_id": WORKSPACE_ID},
        headers=auth_headers(),
    )
    check(resp.status_code in (200, 201), f"tool_commit_memory {resp.status_code}")
    # memory.py search_memory: q and the upper-cased scope; 200 must be a JSON list.
    resp = await client.get(
        f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/memories",
        params={"q": "deployments", "scope": "team".upper()},
        headers=auth_headers(),
    )
    check(resp.status_code == 200, f"search_memory {resp.status_code}")
    memories = resp.json()
    check(isinstance(memories, list), "search_memory list")
    seen["team_search"] = [m["content"] for m in memories]
    # a2a_tools.py tool_recall_memory: workspace_id rides along as a parameter.
    resp = await client.get(
        f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/memories",
        params={"workspace_id": WORKSPACE_ID, "q": "rotated"},
        headers=auth_headers(),
    )
    check(resp.status_code == 200, "tool_recall_memory")
    seen["recalled"] = [m["content"] for m in resp.json()]


async def send_message_with_attachments(client, seen):
    directory = tempfile.mkdtemp()
    paths = []
    for name, data in [("build output.txt", b"all green\n"), ("chart.png", b"\x89PNG\r\n\x1a\nfake")]:
        path = os.path.join(directory, name)
        with open(path, "wb") as handle:
            handle.write(data)
        paths.append(path)
    files_payload = []
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read()
        mime_type, _ = mimetypes.guess_type(path)
        files_payload.append(("files", (os.path.basename(path), data, mime_type or "application/octet-stream")))
    resp = await client.post(
        f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/chat/uploads",
        files=files_payload,
        headers=auth_headers(),
    )
    check(resp.status_code == 200, f"chat/uploads {resp.status_code} {resp.text}")
    uploaded = resp.json().get("files") or []
    check(isinstance(uploaded, list) and len(uploaded) == len(paths), "one entry per file")
    resp = await client.post(
        f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/notify",
        json={"message": "Done — see attached.", "attachments": uploaded},
        headers=auth_headers(),
    )
    check(resp.status_code == 200, f"notify {resp.status_code} {resp.text}")
    seen["uploaded"] = uploaded


async def request_approval(client, seen):
    resp = await client.post(
        f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/approvals",
        json={"action": "push to production", "reason": "release 1.2"},
        headers=auth_headers(),
    )
    check(resp.status_code == 201, f"approval create {resp.status_code}")
    approval_id = resp.json().get("approval_id")
    ws_url = PLATFORM_URL.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
    headers = {"X-Workspace-ID": WORKSPACE_ID, **auth_headers()}
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        # The parent decides while the runtime waits.
        async with httpx.AsyncClient(timeout=10.0) as parent:
            decided = await parent.post(
                f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/approvals/{approval_id}/decide",
                json={"decision": "approved", "decided_by": "human"},
                headers={"Authorization": f"Bearer {PARENT_TOKEN}"},
            )
            check(decided.status_code == 200, f"decide {decided.status_code} {decided.text}")

        async def wait():
            async for raw_message in ws:
                event = json.loads(raw_message)
                if event.get("event") != "APPROVAL_DECIDED":
                    continue
                if event.get("approval_id") != approval_id:
                    continue
                return {"approved": event.get("status") == "approved", "decided_by": event.get("decided_by", "")}

        seen["approval_ws"] = await asyncio.wait_for(wait(), timeout=10)
    # The polling fallback: scan the list for the id.
    resp = await client.get(f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/approvals", headers=auth_headers())
    check(resp.status_code == 200, "approval list")
    row = next(a for a in resp.json() if a.get("id") == approval_id)
    seen["approval_poll"] = {"status": row.get("status"), "decided_by": row.get("decided_by")}


async def boot_context(client, seen):
    headers = {"X-Workspace-ID": WORKSPACE_ID, **auth_headers()}
    resp = await client.get(f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/instructions/resolve", headers=headers)
    check(resp.status_code == 200, f"instructions {resp.status_code}")
    seen["instructions"] = resp.json().get("instructions", "")
    resp = await client.get(f"{PLATFORM_URL}/workspaces/{PARENT_ID}/shared-context", headers=headers)
    check(resp.status_code == 200, f"shared-context {resp.status_code}")
    seen["parent_context"] = resp.json()


async def checkpoints(client, seen):
    latest = f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/checkpoints/latest"
    resp = await client.get(latest, headers=auth_headers())
    check(resp.status_code == 404, "no checkpoint yet answers 404")
    for step, index, payload in [("task_receive", 0, {"task_id": "t-1", "status": "received"}), ("llm_call", 1, {"success": True, "error": None})]:
        resp = await client.post(
            f"{PLATFORM_URL}/workspaces/{WORKSPACE_ID}/checkpoints",
            json={"workflow_id": "t-1", "step_name": step, "step_index": index, "payload": payload},
            headers=auth_headers(),
        )
        resp.raise_for_status()
    resp = await client.get(latest, headers=auth_headers())
    check(resp.status_code == 200, "latest checkpoint")
    data = resp.json()
    seen["latest_checkpoint"] = {key: data[key] for key in ("workflow_id", "step_name")}
    check(data.get("completed_at"), "completed_at")


async def main():
    seen = {}
    async with httpx.AsyncClient(timeout=60.0) as client:
        await memory_tools(client, seen)
        await send_message_with_attachments(client, seen)
        await request_approval(client, seen)
        await boot_context(client, seen)
        await checkpoints(client, seen)
    print(json.dumps(seen))


asyncio.run(main())
