// One workspace in detail: its card and skills, recent A2A activity, token usage, secret keys
// (never values), tokens, the lifecycle controls and a message box that talks to the agent.

import { ApiError, del, get, post, sendMessage } from "./api.js";
import { ago, isRemote, reachOf, remoteBadge, statusBadge } from "./tree.js";

const el = (tag, className, text) => {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
};

function section(title, ...children) {
  const box = el("section", "section");
  box.append(el("h2", "", title), ...children);
  return box;
}

function facts(pairs) {
  const list = el("dl", "facts");
  for (const [label, value] of pairs) list.append(el("dt", "", label), el("dd", "", value));
  return list;
}

function table(headers, rows) {
  const grid = el("table");
  const head = el("tr");
  headers.forEach((h) => head.append(el("th", "", h)));
  grid.append(head);
  rows.forEach((cells) => {
    const row = el("tr");
    cells.forEach((cell) => row.append(cell instanceof Node ? wrap(cell) : el("td", "", String(cell))));
    grid.append(row);
  });
  return grid;
}

const wrap = (node) => {
  const cell = el("td");
  cell.append(node);
  return cell;
};

/** "12s ago", or "never". */
const since = (iso) => (iso ? `${ago(iso)} ago` : "never");

async function attempt(promise, fallback) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof ApiError) return fallback(error);
    throw error;
  }
}

export class Panel {
  constructor(root, { workspace, confirm, toast }) {
    this.root = root;
    this.workspace = workspace;
    this.confirm = confirm;
    this.toast = toast;
    this.id = null;
    this.chat = [];
  }

  async show(id) {
    if (this.id !== id) {
      this.chat = [];
      this.route = null;
    }
    this.id = id;
    const w = this.workspace(id);
    if (!w) {
      this.root.replaceChildren(el("p", "empty muted", "This workspace is gone."));
      return;
    }
    this.details = el("div");
    this.details.append(el("p", "empty muted", "Loading…"));
    this.root.replaceChildren(this.head(w), this.messages(w), this.details);
    await this.loadDetails(id);
  }

  /** Reloads the card, activity, usage, secrets and tokens, at most every half second. */
  refreshDetails() {
    if (!this.id || this.reloading) return;
    this.reloading = setTimeout(() => {
      this.reloading = null;
      this.loadDetails(this.id);
    }, 500);
  }

  async loadDetails(id) {
    const [route, activity, usage, secrets, tokens] = await Promise.all([
      attempt(get(`/workspaces/${id}/route`), () => null),
      attempt(get(`/workspaces/${id}/activity?limit=15`), () => []),
      attempt(get(`/workspaces/${id}/usage`), () => null),
      attempt(get(`/workspaces/${id}/secrets`), () => []),
      attempt(get(`/workspaces/${id}/tokens`), () => ({ tokens: [] })),
    ]);
    const w = this.workspace(id);
    if (this.id !== id || !w) return;
    this.route = route;
    this.refreshHead();
    this.details.replaceChildren(
      this.card(w),
      this.activity(activity || []),
      this.usage(usage),
      this.secrets(secrets || []),
      this.tokens(tokens ? tokens.tokens || [] : []),
    );
  }

  /** Redraws the head only (status, beat), when an event changes the selected workspace. */
  refreshHead() {
    const w = this.id && this.workspace(this.id);
    const head = this.root.querySelector(".panel-head");
    if (w && head) head.replaceWith(this.head(w));
  }

  tick() {
    const w = this.id && this.workspace(this.id);
    const beat = this.root.querySelector("[data-beat]");
    if (w && beat) beat.textContent = since(w.last_heartbeat_at);
  }

  head(w) {
    const head = el("div", "panel-head");
    const title = el("div", "panel-title");
    title.append(el("h1", "", w.name), statusBadge(w.status));
    if (isRemote(w)) title.append(remoteBadge());
    const beat = el("span", "", since(w.last_heartbeat_at));
    beat.dataset.beat = "1";
    const list = facts([
      ["id", w.id],
      ["role", w.role || "—"],
      ["runtime", `${w.runtime || "—"} · tier ${w.tier}`],
      ["reached by", this.reach(w)],
      ["current task", w.current_task || "—"],
      ["tasks", `${w.active_tasks || 0} active of ${w.max_concurrent_tasks || 1}`],
      ["uptime", w.uptime_seconds ? `${w.uptime_seconds}s` : "—"],
    ]);
    list.append(el("dt", "", "last beat"));
    const dd = el("dd");
    dd.append(beat);
    list.append(dd);
    const actions = el("div", "row-actions");
    const pause = el("button", "", w.status === "paused" ? "Resume" : "Pause");
    pause.id = "action-pause";
    pause.onclick = () => this.lifecycle(w, w.status === "paused" ? "resume" : "pause");
    const remove = el("button", "danger", "Delete");
    remove.id = "action-delete";
    remove.onclick = () => this.remove(w);
    actions.append(pause, remove);
    head.append(title, list, actions);
    return head;
  }

  /** The server's answer when known (it sees open A2A streams), else what the row says. */
  reach(w) {
    const words = { attached: "attached stream", url: "URL", mailbox: "poll mailbox", none: "no route yet" };
    const route = this.route ? words[this.route.route] || this.route.route : reachOf(w);
    const url = w.url && !w.url.startsWith("remote://") ? ` · ${w.url}` : "";
    return `${route}${url}`;
  }

  async lifecycle(w, verb) {
    try {
      await post(`/workspaces/${w.id}/${verb}`);
      this.toast(`${w.name}: ${verb}d`);
    } catch (error) {
      this.toast(`${verb} failed: ${error.message}`, true);
    }
  }

  async remove(w) {
    let confirmed = false;
    try {
      await del(`/workspaces/${w.id}`);
      return;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 409) {
        this.toast(`delete failed: ${error.message}`, true);
        return;
      }
      const children = (error.body && error.body.children) || [];
      confirmed = await this.confirm(
        `Delete ${w.name}?`,
        `${w.name} has ${children.length} sub-workspace(s): ${children.map((c) => c.name).join(", ")}. ` +
          "Deleting it removes them all, and their tokens stop working.",
      );
    }
    if (!confirmed) return;
    try {
      await del(`/workspaces/${w.id}?confirm=true`);
    } catch (error) {
      this.toast(`delete failed: ${error.message}`, true);
    }
  }

  messages(w) {
    const box = el("div", "chat");
    const log = el("div", "chat-log");
    log.id = "chat-log";
    const render = () => {
      log.replaceChildren(...this.chat.map((m) => {
        const bubble = el("div", `bubble ${m.from}${m.failed ? " failed" : ""}`, m.text);
        bubble.dataset.from = m.from;
        return bubble;
      }));
      log.scrollTop = log.scrollHeight;
    };
    render();
    const input = el("textarea");
    input.id = "chat-input";
    input.placeholder = `Message ${w.name}`;
    input.setAttribute("aria-label", "Message");
    const send = el("button", "primary", "Send");
    send.id = "chat-send";
    const card = w.agent_card || {};
    const streaming = Boolean(card.capabilities && card.capabilities.streaming);
    const submit = async () => {
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      send.disabled = true;
      this.chat.push({ from: "you", text });
      const answer = { from: "agent", text: "…" };
      this.chat.push(answer);
      render();
      try {
        answer.text = (await sendMessage(w.id, text, streaming, (partial) => {
          answer.text = partial;
          render();
        })) || "(no text in the answer)";
      } catch (error) {
        answer.text = `error: ${error.message}`;
        answer.failed = true;
      }
      send.disabled = false;
      render();
    };
    send.onclick = submit;
    input.onkeydown = (event) => {
      if (event.key === "Enter" && (event.metaKey || event.ctrlKey)) submit();
    };
    const actions = el("div", "row-actions");
    actions.append(send, el("span", "muted small", streaming ? "streams its answer · Ctrl+Enter sends" : "Ctrl+Enter sends"));
    box.append(log, input, actions);
    return section("Message the agent", box);
  }

  card(w) {
    const card = w.agent_card;
    if (!card) return section("Agent card", el("p", "muted", "No agent has registered yet."));
    const skills = el("ul", "chips");
    (card.skills || []).forEach((skill) => {
      const chip = el("li", "chip", skill.name || skill.id || "skill");
      chip.title = skill.description || "";
      skills.append(chip);
    });
    return section(
      "Agent card",
      facts([
        ["name", card.name || "—"],
        ["description", card.description || "—"],
        ["version", card.version || "—"],
        ["streaming", card.capabilities && card.capabilities.streaming ? "yes" : "no"],
      ]),
      skills.childElementCount ? skills : el("p", "muted small", "No skills declared."),
    );
  }

  activity(rows) {
    if (!rows.length) return section("Recent activity", el("p", "muted", "Nothing yet."));
    return section(
      "Recent activity",
      table(
        ["when", "type", "peer", "status", "ms"],
        rows.map((row) => {
          const status = el("span", row.status === "error" ? "bad" : "ok", row.status || "—");
          const direction = row.activity_type === "a2a_receive" ? "in" : row.activity_type === "a2a_send" ? "out" : "";
          return [
            since(row.created_at),
            `${row.activity_type}${direction ? ` (${direction})` : ""}${row.method ? ` · ${row.method}` : ""}`,
            row.source_id ? row.source_id.slice(0, 8) : row.target_id ? row.target_id.slice(0, 8) : "operator",
            status,
            row.duration_ms ?? "—",
          ];
        }),
      ),
    );
  }

  usage(usage) {
    if (!usage) return section("Token usage", el("p", "muted", "Not available."));
    return section(
      "Token usage",
      facts([
        ["input tokens", String(usage.input_tokens ?? 0)],
        ["output tokens", String(usage.output_tokens ?? 0)],
        ["calls", String(usage.call_count ?? usage.calls ?? 0)],
      ]),
    );
  }

  secrets(rows) {
    const keys = el("ul", "chips");
    rows.forEach((row) => keys.append(el("li", "chip", row.key)));
    return section("Secret keys", keys.childElementCount ? keys : el("p", "muted", "None. Values are never shown here."));
  }

  tokens(rows) {
    if (!rows.length) return section("Tokens", el("p", "muted", "No live tokens."));
    return section(
      "Tokens",
      table(
        ["prefix", "created", "last used", ""],
        rows.map((token) => {
          const revoke = el("button", "", "Revoke");
          revoke.onclick = async () => {
            const ok = await this.confirm("Revoke token?", `The agent holding ${token.prefix}… loses access at once.`);
            if (!ok) return;
            try {
              await del(`/workspaces/${this.id}/tokens/${token.id}`);
              this.loadDetails(this.id);
            } catch (error) {
              this.toast(`revoke failed: ${error.message}`, true);
            }
          };
          return [`${token.prefix}…`, since(token.created_at), since(token.last_used_at), revoke];
        }),
      ),
    );
  }
}
