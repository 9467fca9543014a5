"""The operator console measured in Debian's Chromium (Playwright), against a running server.

1. Badge latency: N agents (default 50) register one at a time (REST, the agent's first beat);
   for each, the time until its ONLINE badge is drawn in the page, beside the time until a plain
   WebSocket client of /ws receives the same WORKSPACE_ONLINE event (the baseline: what the
   platform itself takes). p50/p99 of both, and their ratio. Then they fall silent past the TTL
   (`--ttl`, the server's LIVENESS_TTL_SECONDS) and each beats once: the same two times again.
2. Time to interactive with W workspaces (default 10,000, as 100 trees): from navigation to the
   first drawn list with live updates connected, beside the browser's own fetch of
   `GET /workspaces` (the baseline); then the click-to-panel time and a scroll's frame time.

usage: console.py <base-url> <admin-token> [--agents N] [--workspaces W] [--shots DIR]
"""

import argparse
import asyncio
import json
import statistics
import threading
import time

import httpx
import websockets
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def wait_until(page, expression, timeout=5.0):
    """Polls `expression` in the page. (Playwright's wait_for_function evaluates a string, which
    the console's CSP rightly forbids; the times that matter are taken in the page itself.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.005)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class EventClock:
    """A plain /ws client that notes when each workspace's WORKSPACE_ONLINE arrives."""

    def __init__(self, base, token):
        self.url = base.replace("http://", "ws://") + "/ws"
        self.token = token
        self.online = {}
        self.ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True).start()
        self.ready.wait(10)

    async def run(self):
        async with websockets.connect(self.url, additional_headers={"authorization": f"Bearer {self.token}"}) as ws:
            self.ready.set()
            async for frame in ws:
                event = json.loads(frame)
                if event["event"] == "WORKSPACE_ONLINE":
                    self.online.setdefault(event["workspace_id"], time.time() * 1000)


OBSERVER = """() => {
  window.__online = {};
  const note = () => {
    for (const badge of document.querySelectorAll('.tree-row .badge[data-status="online"]')) {
      const id = badge.closest('.tree-row').dataset.id;
      if (!(id in window.__online)) window.__online[id] = performance.timeOrigin + performance.now();
    }
  };
  new MutationObserver(note).observe(document.getElementById('tree'),
    { subtree: true, childList: true, attributes: true, characterData: true });
}"""


def badge_latency(page, admin, base, token, agents):
    ids = [admin.post("/workspaces", json={"name": f"agent-{i:03}", "external": True}).json()["id"]
           for i in range(agents)]
    clock = EventClock(base, token)
    wait_until(page, f"() => document.querySelectorAll('.tree-row').length >= {agents}")
    page.evaluate(OBSERVER)
    started = {}
    tokens = {}
    with httpx.Client(base_url=base, timeout=10) as agent:
        for workspace_id in ids:
            started[workspace_id] = time.time() * 1000
            reply = agent.post("/registry/register", json={
                "id": workspace_id, "url": "remote://no-inbound", "agent_card": {"name": workspace_id}})
            reply.raise_for_status()
            tokens[workspace_id] = reply.json()["auth_token"]
            wait_until(page, f"() => '{workspace_id}' in window.__online")
    seen = page.evaluate("() => window.__online")
    time.sleep(0.2)
    badge = [seen[i] - started[i] for i in ids]
    event = [clock.online[i] - started[i] for i in ids]
    return tokens, badge, event


def beat_latency(page, base, token, tokens, ttl):
    """After the agents fall silent and show OFFLINE, each beats once: the time until its
    ONLINE badge is drawn again, beside the raw /ws client's WORKSPACE_ONLINE."""
    ids = list(tokens)
    wait_until(page, f"() => document.querySelectorAll('.badge[data-status=\"offline\"]').length >= {len(ids)}",
               timeout=ttl * 3 + 10)
    page.evaluate(OBSERVER)
    clock = EventClock(base, token)
    started = {}
    with httpx.Client(base_url=base, timeout=10) as agent:
        for workspace_id in ids:
            started[workspace_id] = time.time() * 1000
            reply = agent.post("/registry/heartbeat", headers={"authorization": f"Bearer {tokens[workspace_id]}"},
                               json={"workspace_id": workspace_id, "active_tasks": 0, "uptime_seconds": 60})
            reply.raise_for_status()
            wait_until(page, f"() => '{workspace_id}' in window.__online")
    seen = page.evaluate("() => window.__online")
    time.sleep(0.2)
    return [seen[i] - started[i] for i in ids], [clock.online[i] - started[i] for i in ids]


def time_to_interactive(browser, storage, admin, base, workspaces, shots):
    roots = max(1, workspaces // 100)

    async def create_all():
        async with httpx.AsyncClient(base_url=base, headers=admin.headers, timeout=30,
                                     limits=httpx.Limits(max_connections=16)) as client:
            gate = asyncio.Semaphore(16)

            async def create(body):
                async with gate:
                    reply = await client.post("/workspaces", json=body)
                    reply.raise_for_status()
                    return reply.json()["id"]

            parents = await asyncio.gather(*(create({"name": f"team-{r:03}", "role": "lead"}) for r in range(roots)))
            children = []
            for r, parent in enumerate(parents):
                for c in range(workspaces // roots - 1):
                    children.append({"name": f"team-{r:03}-worker-{c:03}", "role": "worker", "parent_id": parent})
            await asyncio.gather(*(create(body) for body in children))

    started = time.monotonic()
    # Its own thread: Playwright's sync API already runs an event loop on this one.
    creator = threading.Thread(target=lambda: asyncio.run(create_all()))
    creator.start()
    creator.join()
    created_in = time.monotonic() - started
    total = len(admin.get("/workspaces").json())

    runs = []
    for _ in range(3):
        context = browser.new_context(viewport={"width": 1440, "height": 900}, storage_state=storage)
        page = context.new_page()
        page.goto(f"{base}/")
        wait_until(page, "() => Boolean(window.molecule && window.molecule.ready)", timeout=60)
        page.wait_for_selector("#link[data-state='live']")
        ready = page.evaluate("() => window.molecule.readyAt")
        fetch = page.evaluate("""() => {
          const entry = performance.getEntriesByType('resource').find((e) => e.name.endsWith('/workspaces'));
          return [entry.responseEnd - entry.startTime, entry.transferSize];
        }""")
        rows = page.evaluate("() => document.querySelectorAll('.tree-row').length")
        clicked = page.evaluate("""() => new Promise((resolve) => {
          const row = document.querySelectorAll('.tree-row')[5];
          const t0 = performance.now();
          row.click();
          requestAnimationFrame(() => resolve(performance.now() - t0));
        })""")
        scroll = page.evaluate("""() => new Promise((resolve) => {
          const tree = document.getElementById('tree');
          const t0 = performance.now();
          tree.scrollTop = tree.scrollHeight / 2;
          tree.dispatchEvent(new Event('scroll'));
          requestAnimationFrame(() => resolve(performance.now() - t0));
        })""")
        runs.append({"tti_ms": ready, "fetch_ms": fetch[0], "bytes": fetch[1], "rows_in_dom": rows,
                     "click_ms": clicked, "scroll_frame_ms": scroll})
        if shots and len(runs) == 1:
            page.wait_for_timeout(300)
            page.screenshot(path=f"{shots}/console-10k.png")
        context.close()
    return total, created_in, runs


def report(title, badge, event):
    print(title)
    print(f"  console  p50 {percentile(badge, 50):7.1f} ms   p99 {percentile(badge, 99):7.1f} ms   max {max(badge):7.1f} ms")
    print(f"  /ws raw  p50 {percentile(event, 50):7.1f} ms   p99 {percentile(event, 99):7.1f} ms   (baseline)")
    print(f"  ratio    p50 {percentile(badge, 50) / percentile(event, 50):5.2f}x   p99 {percentile(badge, 99) / percentile(event, 99):5.2f}x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("token")
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--workspaces", type=int, default=10000)
    parser.add_argument("--shots", default="")
    parser.add_argument("--ttl", type=int, default=3, help="the server's LIVENESS_TTL_SECONDS")
    args = parser.parse_args()
    admin = httpx.Client(base_url=args.base, headers={"authorization": f"Bearer {args.token}"}, timeout=30)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        # Tall enough that every agent's row is drawn (the list draws only what is in view).
        context = browser.new_context(viewport={"width": 1440, "height": max(900, args.agents * 44 + 400)})
        page = context.new_page()
        page.goto(f"{args.base}/")
        page.fill("#signin-token", args.token)
        page.click("#signin-submit")
        page.wait_for_selector("#link[data-state='live']")
        storage = context.storage_state()

        tokens, badge, event = badge_latency(page, admin, args.base, args.token, args.agents)
        report(f"badge latency over {len(badge)} agents (first beat: register -> ONLINE badge drawn):", badge, event)
        badge, event = beat_latency(page, args.base, args.token, tokens, args.ttl)
        report(f"badge latency over {len(badge)} agents (offline, then a heartbeat -> ONLINE badge drawn):", badge, event)
        context.close()

        total, created_in, runs = time_to_interactive(browser, storage, admin, args.base, args.workspaces, args.shots)
        print(f"time to interactive with {total} workspaces (created in {created_in:.1f} s), 3 loads:")
        for run in runs:
            print(f"  tti {run['tti_ms']:7.1f} ms   GET /workspaces {run['fetch_ms']:7.1f} ms ({run['bytes'] / 1e6:.1f} MB)"
                  f"   ratio {run['tti_ms'] / run['fetch_ms']:4.2f}x   rows in DOM {run['rows_in_dom']}"
                  f"   click->panel {run['click_ms']:5.1f} ms   scroll frame {run['scroll_frame_ms']:5.1f} ms")
        median = statistics.median(run["tti_ms"] for run in runs)
        print(f"  median tti {median:.1f} ms")
        browser.close()


if __name__ == "__main__":
    main()
