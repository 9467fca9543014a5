// The organisation as a tree, drawn as a virtual list: only the rows in view exist in the DOM,
// so 10,000 workspaces cost what 30 do. Rows are built with DOM calls, never from HTML strings.

const STATUS = {
  online: ["online", "online"],
  degraded: ["degraded", "degraded"],
  offline: ["offline", "offline"],
  paused: ["paused", "paused"],
  awaiting_agent: ["awaiting agent", "awaiting"],
  provisioning: ["provisioning", "provisioning"],
  failed: ["failed", "failed"],
  removed: ["removed", "removed"],
};

/** A status badge: the word is always there, so colour is never the only signal. */
export function statusBadge(status) {
  const [text, tone] = STATUS[status] || [status || "unknown", "paused"];
  const badge = document.createElement("span");
  badge.className = `badge ${tone}`;
  badge.dataset.status = status;
  badge.textContent = text;
  return badge;
}

export function remoteBadge() {
  const badge = document.createElement("span");
  badge.className = "badge remote";
  badge.textContent = "remote";
  badge.title = "external runtime: the agent runs outside the platform";
  return badge;
}

export const isRemote = (w) => w.runtime === "external";

/** "beat 12s ago", or "no beat yet". */
export const lastBeat = (w) => (w.last_heartbeat_at ? `beat ${ago(w.last_heartbeat_at)} ago` : "no beat yet");

/** How a call reaches the agent: its URL, or its poll mailbox. */
export function reachOf(w) {
  const url = w.url || "";
  if (url.startsWith("remote://") || (!url && isRemote(w))) return "poll mailbox";
  if (url) return "URL";
  return "no route yet";
}

/** "12s", "4m", "3h" since `iso`. */
export function ago(iso, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

export class WorkspaceTree {
  constructor(container, spacer, onSelect) {
    this.container = container;
    this.spacer = spacer;
    this.onSelect = onSelect;
    this.byId = new Map();
    this.rows = [];
    this.collapsed = new Set();
    this.filter = "";
    this.selected = null;
    this.rowHeight = 44;
    this.pool = [];
    this.dirty = true;
    container.addEventListener("scroll", () => this.draw());
    new ResizeObserver(() => this.draw()).observe(container);
    container.addEventListener("keydown", (event) => this.key(event));
  }

  replaceAll(list) {
    this.byId = new Map(list.map((w) => [w.id, w]));
    this.dirty = true;
    this.draw();
  }

  upsert(w) {
    const known = this.byId.get(w.id);
    if (!known) {
      this.byId.set(w.id, w);
      this.dirty = true;
      return;
    }
    if (known.parent_id !== w.parent_id || known.name !== w.name) this.dirty = true;
    // In place: the flattened rows hold this object.
    Object.assign(known, w);
  }

  patch(id, fields) {
    const known = this.byId.get(id);
    if (!known) return false;
    Object.assign(known, fields);
    return true;
  }

  remove(id) {
    if (this.byId.delete(id)) this.dirty = true;
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.dirty = true;
    this.draw();
  }

  /** Flattens the tree in depth-first order, children by name, honouring collapse and filter. */
  flatten() {
    const children = new Map();
    const roots = [];
    for (const w of this.byId.values()) {
      if (w.parent_id && this.byId.has(w.parent_id)) {
        if (!children.has(w.parent_id)) children.set(w.parent_id, []);
        children.get(w.parent_id).push(w);
      } else {
        roots.push(w);
      }
    }
    const byName = (a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id);
    this.children = children;
    const rows = [];
    if (this.filter) {
      const needle = this.filter;
      for (const w of [...this.byId.values()].sort(byName)) {
        const hay = `${w.name} ${w.role || ""} ${w.id}`.toLowerCase();
        if (hay.includes(needle)) rows.push({ w, depth: 0 });
      }
    } else {
      const stack = roots.sort(byName).reverse().map((w) => ({ w, depth: 0 }));
      while (stack.length) {
        const row = stack.pop();
        rows.push(row);
        const kids = children.get(row.w.id);
        if (kids && !this.collapsed.has(row.w.id)) {
          for (const w of kids.sort(byName).reverse()) stack.push({ w, depth: row.depth + 1 });
        }
      }
    }
    this.rows = rows;
    this.dirty = false;
  }

  draw() {
    if (this.dirty) this.flatten();
    const height = this.rows.length * this.rowHeight;
    this.spacer.style.height = `${height}px`;
    const top = this.container.scrollTop;
    const first = Math.max(0, Math.floor(top / this.rowHeight) - 4);
    const count = Math.ceil(this.container.clientHeight / this.rowHeight) + 8;
    const visible = this.rows.slice(first, first + count);
    while (this.pool.length < visible.length) {
      const element = document.createElement("div");
      element.className = "tree-row";
      element.setAttribute("role", "treeitem");
      element.addEventListener("click", (event) => this.click(element, event));
      this.container.appendChild(element);
      this.pool.push(element);
    }
    this.pool.forEach((element, index) => {
      const row = visible[index];
      if (!row) {
        element.hidden = true;
        return;
      }
      element.hidden = false;
      element.style.transform = `translateY(${(first + index) * this.rowHeight}px)`;
      this.fill(element, row);
    });
  }

  fill(element, { w, depth }) {
    element.dataset.id = w.id;
    element.setAttribute("aria-selected", String(w.id === this.selected));
    element.setAttribute("aria-level", String(depth + 1));
    const kids = this.children && this.children.get(w.id);
    const key = [w.name, w.role, w.status, w.runtime, w.url, w.last_heartbeat_at, w.current_task,
      w.active_tasks, depth, kids ? kids.length : 0, this.collapsed.has(w.id)].join("\u0000");
    const tick = element.querySelector(".beat");
    if (element.dataset.key === key && tick) {
      tick.textContent = lastBeat(w);
      return;
    }
    element.dataset.key = key;
    element.replaceChildren();
    const main = document.createElement("div");
    main.className = "tree-main";
    main.style.paddingLeft = `${depth * 18}px`;
    const title = document.createElement("div");
    title.className = "tree-title";
    const caret = document.createElement("span");
    caret.className = "caret";
    caret.textContent = kids ? (this.collapsed.has(w.id) ? "▸" : "▾") : "";
    caret.dataset.toggle = kids ? "1" : "";
    const name = document.createElement("span");
    name.className = "tree-name";
    name.textContent = w.name;
    title.append(caret, name, statusBadge(w.status));
    if (isRemote(w)) title.append(remoteBadge());
    const sub = document.createElement("div");
    sub.className = "tree-sub";
    const task = w.current_task ? ` · ${w.current_task}` : "";
    sub.textContent = `${w.role || "no role"} · ${reachOf(w)}${task}`;
    main.append(title, sub);
    const meta = document.createElement("div");
    meta.className = "tree-meta";
    const beat = document.createElement("span");
    beat.className = "beat";
    beat.textContent = lastBeat(w);
    const tasks = document.createElement("span");
    tasks.textContent = `${w.active_tasks || 0} active`;
    meta.append(tasks, beat);
    element.append(main, meta);
  }

  click(element, event) {
    const id = element.dataset.id;
    if (event.target.dataset && event.target.dataset.toggle === "1") {
      if (this.collapsed.has(id)) this.collapsed.delete(id);
      else this.collapsed.add(id);
      this.dirty = true;
      this.draw();
      return;
    }
    this.select(id);
  }

  select(id) {
    this.selected = id;
    this.pool.forEach((element) => element.setAttribute("aria-selected", String(element.dataset.id === id)));
    this.onSelect(id);
  }

  key(event) {
    if (!["ArrowDown", "ArrowUp"].includes(event.key) || !this.rows.length) return;
    event.preventDefault();
    const index = this.rows.findIndex((row) => row.w.id === this.selected);
    const next = Math.min(this.rows.length - 1, Math.max(0, index + (event.key === "ArrowDown" ? 1 : -1)));
    this.select(this.rows[next].w.id);
    const top = next * this.rowHeight;
    if (top < this.container.scrollTop || top + this.rowHeight > this.container.scrollTop + this.container.clientHeight) {
      this.container.scrollTop = top - this.container.clientHeight / 2;
    }
  }

  counts() {
    const counts = {};
    for (const w of this.byId.values()) counts[w.status] = (counts[w.status] || 0) + 1;
    return counts;
  }
}
