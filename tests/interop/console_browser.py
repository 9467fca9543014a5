"""The operator console in a real browser: Debian's Chromium driven by Playwright.

Signs in (a wrong token first), watches a REST agent register and show ONLINE and REMOTE, then go
OFFLINE when it falls silent; messages a fake agent and reads its answer; pauses a streaming agent
from the console and sees the control frame reach its gRPC heartbeat stream; checks that a
cross-origin request with the session cookie is refused and that a signed-out session is dead.
Prints one line per step; screenshots go to <shots>.

usage: console_browser.py <rest-base-url> <grpc-base-url> <admin-token> <shots-dir>
"""

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import httpx
from playwright.sync_api import sync_playwright

from heartbeat_stream import generate_stubs

CHROMIUM = "/usr/bin/chromium"


class FakeAgent(BaseHTTPRequestHandler):
    """An A2A agent: `message/send` answers `echo: <text>` whole; `message/stream` streams it as
    two artifact chunks and a final status, the way streaming agents do."""

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        text = " ".join(p.get("text", "") for p in request["params"]["message"]["parts"])
        if request["method"] == "message/stream":
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            chunks = [
                {"kind": "artifact-update", "append": False, "artifact": {"parts": [{"kind": "text", "text": "echo: "}]}},
                {"kind": "artifact-update", "append": True, "artifact": {"parts": [{"kind": "text", "text": text}]}},
                {"kind": "status-update", "final": True, "status": {"state": "completed"}},
            ]
            for chunk in chunks:
                event = {"jsonrpc": "2.0", "id": request["id"], "result": chunk}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.05)
            return
        reply = {
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {"kind": "message", "role": "agent", "messageId": "m1",
                       "parts": [{"kind": "text", "text": f"echo: {text}"}]},
        }
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_fake_agent() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAgent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


# Notes the wall-clock time at which the row shows both ONLINE and REMOTE.
BADGE_CLOCK = """(id) => {
  const tree = document.getElementById('tree');
  const check = () => {
    const online = tree.querySelector(`.tree-row[data-id="${id}"] .badge[data-status="online"]`);
    const remote = tree.querySelector(`.tree-row[data-id="${id}"] .badge.remote`);
    if (online && remote && !window.__badgeShownAt) window.__badgeShownAt = performance.timeOrigin + performance.now();
  };
  new MutationObserver(check).observe(tree, { subtree: true, childList: true, attributes: true });
}"""


def row(workspace_id: str) -> str:
    return f'.tree-row[data-id="{workspace_id}"]'


def main() -> None:
    base, grpc_base, admin_token, shots = sys.argv[1:5]
    shots = Path(shots)
    shots.mkdir(parents=True, exist_ok=True)
    generate_stubs(Path(tempfile.mkdtemp()))
    from molecule.v1 import registry_pb2, registry_pb2_grpc

    admin = httpx.Client(base_url=base, headers={"authorization": f"Bearer {admin_token}"}, timeout=10)
    agent_url = start_fake_agent()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        problems = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        # A refused fetch (the 401 before sign-in) is logged by the browser itself; anything
        # else (a script error, a CSP violation) is a problem.
        page.on("console", lambda m: problems.append(f"console: {m.text}")
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)

        response = page.goto(f"{base}/")
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
        page.wait_for_selector("#signin-token")

        page.fill("#signin-token", "not-a-real-token")
        page.click("#signin-submit")
        page.wait_for_selector("#signin-error:has-text('not an operator credential')")
        assert not context.cookies(), context.cookies()
        print("WRONG_TOKEN_REFUSED", flush=True)

        page.fill("#signin-token", admin_token)
        page.click("#signin-submit")
        page.wait_for_selector("#app:not([hidden])")
        page.wait_for_selector("#link[data-state='live']")
        (cookie,) = context.cookies()
        assert cookie["name"] == "molecule_session" and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
        stored = page.evaluate("() => JSON.stringify([localStorage, sessionStorage]) + document.documentElement.outerHTML")
        assert admin_token not in stored and cookie["value"] not in stored
        print(f"SIGNED_IN {page.text_content('#principal')}", flush=True)

        # A REST agent registers: ONLINE and REMOTE within a second. The page notes when the
        # badges are drawn (a MutationObserver), so a slow test machine cannot blur the figure.
        created = admin.post("/workspaces", json={"name": "remote-agent", "external": True}).json()
        agent_id = created["id"]
        page.wait_for_selector(f"{row(agent_id)} .badge[data-status='awaiting_agent']", timeout=5000)
        page.evaluate(BADGE_CLOCK, agent_id)
        registered = httpx.post(f"{base}/registry/register", timeout=10, json={
            "id": agent_id, "url": agent_url,
            "agent_card": {"name": "remote-agent", "capabilities": {"streaming": True},
                           "skills": [{"id": "echo", "name": "Echo"}]}})
        registered_at = time.time() * 1000
        assert registered.status_code == 200, registered.text
        agent_token = registered.json()["auth_token"]
        httpx.post(f"{base}/registry/heartbeat", timeout=10, headers={"authorization": f"Bearer {agent_token}"},
                   json={"workspace_id": agent_id, "active_tasks": 0, "uptime_seconds": 1})
        page.wait_for_selector(f"{row(agent_id)} .badge[data-status='online']", timeout=5000)
        page.wait_for_selector(f"{row(agent_id)} .badge.remote", timeout=5000)
        shown_at = page.evaluate("() => window.__badgeShownAt")
        print(f"ONLINE_REMOTE within_1s={shown_at - registered_at < 1000}", flush=True)

        # The operator messages it and reads the answer, streamed (its card says it streams).
        page.click(row(agent_id))
        page.wait_for_selector("#chat-input")
        page.wait_for_selector("text=streams its answer")
        page.fill("#chat-input", "hello from the console")
        page.click("#chat-send")
        answer = page.wait_for_selector(".bubble.agent:has-text('echo: hello')", timeout=5000)
        print(f"ANSWER {answer.text_content()}", flush=True)
        # The call shows in the panel's recent activity without a reload.
        page.wait_for_selector("#panel td:has-text('a2a_receive')", timeout=3000)
        page.screenshot(path=str(shots / "console-online.png"))

        # Silence past the TTL: OFFLINE, shown without a reload.
        page.wait_for_selector(f"{row(agent_id)} .badge[data-status='offline']", timeout=15000)
        print("OFFLINE", flush=True)

        # A streaming agent; the console's Pause reaches its stream as a control frame.
        streamer = admin.post("/workspaces", json={"name": "streaming-agent", "external": True}).json()["id"]
        token = httpx.post(f"{base}/registry/register", timeout=10, json={
            "id": streamer, "url": "remote://no-inbound", "agent_card": {"name": "streaming-agent"}}).json()["auth_token"]
        outbound: queue.Queue = queue.Queue()

        def frames():
            while (frame := outbound.get()) is not None:
                yield frame

        channel = grpc.insecure_channel(grpc_base.removeprefix("http://"))
        replies = registry_pb2_grpc.RegistryStub(channel).HeartbeatStream(
            frames(), metadata=[("x-workspace-id", streamer), ("authorization", f"Bearer {token}")], timeout=60)
        outbound.put(registry_pb2.AgentFrame(beat=registry_pb2.Beat(
            sequence=1, heartbeat=registry_pb2.HeartbeatRequest(active_tasks=2, current_task="indexing"))))
        assert next(replies).WhichOneof("frame") == "ack"
        page.click(row(streamer))
        page.wait_for_selector("#action-pause")
        page.click("#action-pause")
        control = next(replies)
        assert control.WhichOneof("frame") == "control", control
        print(f"CONTROL {registry_pb2.Control.Kind.Name(control.control.kind)}", flush=True)
        page.wait_for_selector(f"{row(streamer)} .badge[data-status='paused']", timeout=1000)
        page.wait_for_selector(f"{row(streamer)} .tree-sub:has-text('indexing')", timeout=1000)
        page.screenshot(path=str(shots / "console-paused.png"))
        outbound.put(None)
        channel.close()

        # "Connect an agent": the token is shown once, and both snippets work as pasted.
        page.click("#connect-open")
        page.fill("#connect-name", "laptop-agent")
        page.click("#connect-create")
        page.wait_for_selector("#connect-result:not([hidden])")
        shown_token = page.text_content("#connect-token")
        sdk = page.text_content("#connect-sdk")
        laptop = re.search(r'workspace_id="([0-9a-f-]+)"', sdk).group(1)
        home = Path(tempfile.mkdtemp())
        (home / "snippet.py").write_text(sdk)
        ran = subprocess.run([sys.executable, str(Path(__file__).with_name("snippet_check.py")), str(home / "snippet.py")],
                             env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, check=True)
        assert ran.stdout.splitlines() == ["INSTALL", f"CLIENT {laptop} {base}", "REGISTER", "REPLY received: hello"], ran
        assert (home / ".molecule" / laptop / ".auth_token").read_text() == shown_token
        curl = subprocess.run(["bash", "-c", page.text_content("#connect-curl")], capture_output=True, text=True, check=True)
        assert json.loads(curl.stdout) == {"status": "registered"}, curl.stdout
        page.click("#connect-done")
        page.wait_for_selector(f"{row(laptop)} .badge[data-status='online']", timeout=5000)
        assert not page.text_content("#connect-token")
        print("CONNECTED", flush=True)

        # The session cookie from another origin, or with no origin, changes nothing.
        session = {"molecule_session": cookie["value"]}
        before = len(admin.get("/workspaces").json())
        for origin in ({"origin": "http://evil.example"}, {}):
            refused = httpx.post(f"{base}/workspaces", cookies=session, headers=origin, json={"name": "csrf"})
            assert refused.status_code == 403 and refused.json() == {"error": "origin not allowed"}, refused.text
        assert len(admin.get("/workspaces").json()) == before
        readable = httpx.get(f"{base}/workspaces", cookies=session)
        assert readable.status_code == 200, readable.text
        print("CROSS_ORIGIN_REFUSED", flush=True)

        # Signing out ends the session on the server, not only in this browser.
        page.click("#signout")
        page.wait_for_selector("#signin:not([hidden])")
        dead = httpx.get(f"{base}/workspaces", cookies=session)
        assert dead.status_code == 401, dead.text
        print("SIGNED_OUT", flush=True)

        assert not problems, problems
        browser.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
