// The API reference at /docs: renders /openapi.json with plain DOM calls (textContent only, so
// nothing from the document is ever parsed as HTML). No third-party code; works offline.

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

function schemaName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return `array of ${schemaName(schema.items) || "items"}`;
  return Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "object";
}

function resolve(document, schema) {
  if (!schema || !schema.$ref) return schema;
  return document.components?.schemas?.[schema.$ref.split("/").pop()];
}

function fields(document, schema) {
  const resolved = resolve(document, schema);
  const properties = resolved?.properties;
  if (!properties) return null;
  const required = new Set(resolved.required || []);
  const rows = Object.entries(properties).map(([name, property]) =>
    el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, schemaName(property)),
      el("td", {}, required.has(name) ? "required" : ""),
      el("td", {}, property.description || "")));
  return el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, ""),
    el("th", {}, "")), ...rows);
}

function example(media) {
  const value = media?.example ?? Object.values(media?.examples || {})[0]?.value;
  return value === undefined ? null : el("pre", {}, JSON.stringify(value, null, 2));
}

function operation(document, path, method, op) {
  const body = el("div", { class: "op-body" });
  if (op.description || op.summary) body.append(el("p", {}, op.description || op.summary));
  const parameters = op.parameters || [];
  if (parameters.length) {
    body.append(el("h4", {}, "Parameters"), el("table", {},
      el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "")),
      ...parameters.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, schemaName(p.schema) + (p.required ? ", required" : "")),
        el("td", {}, p.description || "")))));
  }
  const request = op.requestBody?.content;
  if (request) {
    for (const [type, media] of Object.entries(request)) {
      body.append(el("h4", {}, `Request body (${type}): ${schemaName(media.schema)}`));
      const table = fields(document, media.schema);
      if (table) body.append(table);
      const sample = example(media);
      if (sample) body.append(sample);
    }
  }
  body.append(el("h4", {}, "Responses"));
  for (const [status, response] of Object.entries(op.responses || {})) {
    const media = Object.values(response.content || {})[0];
    body.append(el("p", {}, el("strong", {}, status), " ", response.description || "",
      media ? ` — ${schemaName(media.schema)}` : ""));
    const sample = example(media);
    if (sample) body.append(sample);
  }
  const details = el("details", { class: "op", "data-search": `${method} ${path} ${(op.tags || []).join(" ")}`.toLowerCase() },
    el("summary", {}, el("span", { class: `method ${method}` }, method), el("span", { class: "path" }, path),
      el("span", { class: "muted" }, op.summary || "")),
    body);
  return details;
}

function render(document) {
  const title = window.document.getElementById("title");
  title.textContent = `${document.info?.title || "API"} ${document.info?.version || ""}`.trim();
  const byTag = new Map((document.tags || []).map((tag) => [tag.name, { tag, ops: [] }]));
  let count = 0;
  for (const [path, item] of Object.entries(document.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const name = (op.tags || ["other"])[0];
      if (!byTag.has(name)) byTag.set(name, { tag: { name }, ops: [] });
      byTag.get(name).ops.push(operation(document, path, method, op));
      count += 1;
    }
  }
  window.document.getElementById("summary").textContent =
    `${count} operations in ${byTag.size} groups. ${document.info?.description || ""}`;
  const main = window.document.getElementById("tags");
  main.replaceChildren();
  for (const { tag, ops } of byTag.values()) {
    if (!ops.length) continue;
    main.append(el("section", { class: "tag" }, el("h2", {}, tag.name),
      el("p", { class: "muted" }, tag.description || ""), ...ops));
  }
}

function filter(query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  for (const op of document.querySelectorAll("details.op")) {
    op.hidden = !words.every((word) => op.dataset.search.includes(word));
  }
  for (const section of document.querySelectorAll("section.tag")) {
    section.hidden = !section.querySelector("details.op:not([hidden])");
  }
}

const response = await fetch("/openapi.json");
render(await response.json());
document.getElementById("filter").addEventListener("input", (event) => filter(event.target.value));
