// The console's entry point: sign-in, the live model of the organisation (fetched once, then
// kept current by /ws events applied in batches), and the wiring between the panes.

import { ApiError, connectEvents, del, get, onSignedOut, post, put } from "./api.js";
import { Panel } from "./panel.js";
import { WorkspaceTree } from "./tree.js";

const $ = (id) => document.getElementById(id);

/** The status each lifecycle event puts its workspace in. */
const EVENT_STATUS = {
  WORKSPACE_ONLINE: "online",
  WORKSPACE_DEGRADED: "degraded",
  WORKSPACE_OFFLINE: "offline",
  WORKSPACE_PAUSED: "paused",
  WORKSPACE_PROVISIONING: "provisioning",
  WORKSPACE_AWAITING_AGENT: "awaiting_agent",
  WORKSPACE_PROVISION_FAILED: "failed",
};
/** Events after which the workspace's whole row is fetched again. */
const REFETCH = new Set(["WORKSPACE_UPDATED", "AGENT_CARD_UPDATED", ...Object.keys(EVENT_STATUS)]);
const FEED_LIMIT = 200;

let tree;
let panel;
let stopEvents = null;
const pending = [];
let flushScheduled = false;

window.molecule = { ready: false, events: 0 };

async function boot() {
  onSignedOut(showSignIn);
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  try {
    await start(await get("/console/session"));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showSignIn();
    else throw error;
  }
}

function showSignIn() {
  if (stopEvents) stopEvents();
  stopEvents = null;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("signin-token");
  $("signin-error").textContent = "";
  try {
    const session = await post("/console/session", { token: input.value });
    input.value = "";
    await start(session);
  } catch (error) {
    input.value = "";
    $("signin-error").textContent = error.status === 401 ? "That token is not an operator credential." : error.message;
  }
}

async function signOut() {
  await del("/console/session").catch(() => {});
  showSignIn();
}

async function start(session) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("principal").textContent = session.principal;
  if (!tree) {
    tree = new WorkspaceTree($("tree"), $("tree-spacer"), (id) => panel.show(id));
    panel = new Panel($("panel"), { workspace: (id) => tree.byId.get(id), confirm, toast });
    $("filter").addEventListener("input", (event) => tree.setFilter(event.target.value));
    wireConnectDialog();
    wireViewport();
    setInterval(tick, 1000);
  }
  await resync();
  window.molecule.ready = true;
  window.molecule.readyAt = performance.now();
  stopEvents = connectEvents({
    onEvent: queue,
    onState: (state) => {
      $("link").dataset.state = state;
      $("link").textContent = state === "live" ? "live" : "reconnecting";
    },
    onResync: () => resync().catch(() => {}),
  });
}

/** Everything from scratch: after sign-in and after every reconnect. */
async function resync() {
  const [workspaces] = await Promise.all([get("/workspaces"), loadApprovals()]);
  tree.replaceAll(workspaces);
  drawCounts();
  if (panel.id) panel.refreshHead();
}

function queue(event) {
  window.molecule.events += 1;
  pending.push(event);
  if (!flushScheduled) {
    flushScheduled = true;
    // One batch per frame, or per 100 ms when the tab is hidden and frames stop.
    const flush = () => {
      if (!flushScheduled) return;
      flushScheduled = false;
      apply(pending.splice(0));
    };
    requestAnimationFrame(flush);
    setTimeout(flush, 100);
  }
}

function apply(events) {
  const refetch = new Set();
  let approvals = false;
  for (const event of events) {
    const id = event.workspace_id;
    feed(event);
    const payload = event.payload || {};
    if (event.event === "WORKSPACE_HEARTBEAT") {
      const known = tree.patch(id, {
        last_heartbeat_at: event.timestamp,
        active_tasks: payload.active_tasks ?? 0,
        uptime_seconds: payload.uptime_seconds ?? 0,
      });
      if (!known) refetch.add(id);
    } else if (event.event === "TASK_UPDATED") {
      // The single-workspace view has no current task: the event's payload is the source.
      tree.patch(id, { current_task: payload.current_task || "", active_tasks: payload.active_tasks ?? 0 });
    } else if (event.event === "WORKSPACE_REMOVED") {
      tree.remove(id);
    } else if (id && (EVENT_STATUS[event.event] || REFETCH.has(event.event))) {
      if (EVENT_STATUS[event.event]) tree.patch(id, { status: EVENT_STATUS[event.event] });
      refetch.add(id);
    } else if (id && !tree.byId.has(id)) {
      refetch.add(id);
    }
    if (event.event.startsWith("APPROVAL_")) approvals = true;
  }
  tree.draw();
  drawCounts();
  const selected = events.filter((e) => e.workspace_id === panel.id);
  if (selected.length) panel.refreshHead();
  if (selected.some((e) => e.event !== "WORKSPACE_HEARTBEAT")) panel.refreshDetails();
  if (approvals) loadApprovals();
  if (refetch.size > 50) {
    resync();
  } else {
    refetch.forEach(refetchOne);
  }
}

/** The newest fetch per workspace: an older answer arriving later must not overwrite it. */
const latestFetch = new Map();

function refetchOne(id) {
  const ticket = (latestFetch.get(id) || 0) + 1;
  latestFetch.set(id, ticket);
  get(`/workspaces/${id}`).then((w) => {
    if (latestFetch.get(id) !== ticket) return;
    latestFetch.delete(id);
    tree.upsert(w);
    tree.draw();
    drawCounts();
    if (panel.id === id) panel.refreshHead();
  }).catch(() => {
    if (latestFetch.get(id) === ticket) latestFetch.delete(id);
  });
}

function tick() {
  if (!tree) return;
  tree.draw();
  panel.tick();
}

function drawCounts() {
  const counts = tree.counts();
  const total = tree.byId.size;
  const pills = [["total", total], ["online", counts.online || 0], ["offline", counts.offline || 0],
    ["paused", counts.paused || 0]];
  $("counts").replaceChildren(...pills.map(([label, value]) => {
    const pill = document.createElement("span");
    pill.className = "count";
    pill.dataset.count = label;
    pill.textContent = `${value} ${label}`;
    return pill;
  }));
}

function feed(event) {
  if (event.event === "WORKSPACE_HEARTBEAT" && !$("feed-beats").checked) return;
  const list = $("feed");
  const item = document.createElement("li");
  const time = document.createElement("span");
  time.className = "feed-time";
  time.textContent = clock(event.timestamp);
  const body = document.createElement("span");
  const type = document.createElement("span");
  type.className = "feed-type";
  type.textContent = event.event;
  const w = tree.byId.get(event.workspace_id);
  body.append(type, document.createTextNode(w ? ` · ${w.name}` : ""));
  item.append(time, body);
  list.prepend(item);
  while (list.childElementCount > FEED_LIMIT) list.lastElementChild.remove();
}

async function loadApprovals() {
  let rows = [];
  try {
    rows = await get("/approvals/pending");
  } catch {
    rows = [];
  }
  const list = $("approval-list");
  $("approvals").hidden = rows.length === 0;
  list.replaceChildren(...rows.map((row) => {
    const item = document.createElement("li");
    const what = document.createElement("strong");
    what.textContent = row.action;
    const who = document.createElement("span");
    who.className = "muted small";
    who.textContent = `${row.workspace_name || row.workspace_id} · ${row.reason || "no reason given"}`;
    const actions = document.createElement("div");
    actions.className = "row-actions";
    for (const decision of ["approved", "denied"]) {
      const button = document.createElement("button");
      button.className = decision === "approved" ? "primary" : "danger";
      button.textContent = decision === "approved" ? "Approve" : "Deny";
      button.onclick = async () => {
        try {
          await post(`/workspaces/${row.workspace_id}/approvals/${row.id}/decide`, { decision });
        } catch (error) {
          toast(`decision failed: ${error.message}`, true);
        }
        loadApprovals();
      };
      actions.append(button);
    }
    item.append(what, who, actions);
    return item;
  }));
}

function wireConnectDialog() {
  const dialog = $("connect-dialog");
  $("connect-open").onclick = () => {
    $("connect-form").hidden = false;
    $("connect-result").hidden = true;
    $("connect-name").value = "";
    const parent = $("connect-parent");
    const none = new Option("— none (a root) —", "");
    const options = [...tree.byId.values()].sort((a, b) => a.name.localeCompare(b.name)).slice(0, 500)
      .map((w) => new Option(w.name, w.id));
    parent.replaceChildren(none, ...options);
    dialog.showModal();
    $("connect-name").focus();
  };
  $("connect-cancel").onclick = () => dialog.close();
  $("connect-done").onclick = () => {
    $("connect-token").textContent = "";
    dialog.close();
  };
  $("connect-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: $("connect-name").value.trim(), external: true, runtime: "external" };
    if ($("connect-parent").value) body.parent_id = $("connect-parent").value;
    try {
      const created = await post("/workspaces", body);
      const minted = await post(`/workspaces/${created.id}/tokens`);
      const connection = created.connection || {};
      const token = minted.auth_token;
      const platform = connection.platform_url || location.origin;
      $("connect-token").textContent = token;
      $("connect-curl").textContent = registerCall(platform, created.id, body.name, token);
      $("connect-sdk").textContent = sdkSnippet(platform, created.id, token);
      $("connect-form").hidden = true;
      $("connect-result").hidden = false;
    } catch (error) {
      toast(`create failed: ${error.message}`, true);
    }
  });
}

/** The agent's first call: register with its own token (the URL is where it takes A2A calls). */
function registerCall(platform, id, name, token) {
  // Inside single quotes in the shell: a quote in the name closes, escapes and reopens them.
  const card = JSON.stringify({ name, skills: [] }).replaceAll("'", "'\\''");
  return `AGENT_URL=remote://no-inbound   # or the URL where the agent takes A2A calls\n` +
    `curl -sS -X POST ${platform}/registry/register \\\n` +
    `  -H 'Authorization: Bearer ${token}' \\\n` +
    `  -H 'Content-Type: application/json' \\\n` +
    `  -d '{"id":"${id}","url":"'"$AGENT_URL"'","agent_card":${card}}'`;
}

/**
 * The Python SDK, given the token minted here: it goes where the SDK keeps its token, so the
 * client beats and answers with it (the SDK registers without a bearer, which mints nothing).
 */
function sdkSnippet(platform, id, token) {
  return [
    '# pip install "git+https://github.com/Molecule-AI/molecule-sdk-python"',
    "from pathlib import Path",
    "",
    "from molecule_agent import RemoteAgentClient",
    "",
    "# The token minted for this agent, where the SDK keeps it.",
    `token_file = Path.home() / ".molecule" / "${id}" / ".auth_token"`,
    "token_file.parent.mkdir(parents=True, exist_ok=True)",
    `token_file.write_text("${token}")`,
    "token_file.chmod(0o600)",
    "",
    "",
    "def handle(message, client):",
    "    # Called once per inbound message; a returned string is sent back as the reply.",
    '    return f"received: {message.text}"',
    "",
    "",
    `client = RemoteAgentClient(workspace_id="${id}", platform_url="${platform}")`,
    "client.register()",
    "client.run_agent_loop(handle)",
    "",
  ].join("\n");
}

/** The tree's scroll position is the console's viewport, saved for the operator. */
function wireViewport() {
  get("/canvas/viewport").then((viewport) => {
    $("tree").scrollTop = viewport.y || 0;
  }).catch(() => {});
  let timer = null;
  $("tree").addEventListener("scroll", () => {
    clearTimeout(timer);
    timer = setTimeout(() => put("/canvas/viewport", { x: 0, y: $("tree").scrollTop, zoom: 1 }).catch(() => {}), 800);
  });
}

/** hh:mm:ss, 24-hour, of `iso` (now when absent). */
function clock(iso) {
  return new Date(iso || Date.now()).toLocaleTimeString([], { hour12: false });
}

function confirm(title, text) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

function toast(message, failed = false) {
  const item = document.createElement("li");
  const time = document.createElement("span");
  time.className = "feed-time";
  time.textContent = clock();
  const text = document.createElement("span");
  text.className = failed ? "bad" : "ok";
  text.textContent = message;
  item.append(time, text);
  $("feed").prepend(item);
}

boot();
