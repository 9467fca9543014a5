// The console's only door to the platform: same-origin REST with the session cookie, and the
// live /ws stream. It never sees a token after sign-in; the cookie is HttpOnly.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const listeners = new Set();

/** Called with no arguments when the session is gone (a 401 from any call). */
export function onSignedOut(listener) {
  listeners.add(listener);
}

export async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    if (response.status === 401 && path !== "/console/session") {
      listeners.forEach((listener) => listener());
    }
    const message = (data && data.error) || response.statusText || "request failed";
    const error = new ApiError(response.status, message);
    error.body = data;
    throw error;
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const put = (path, body) => call("PUT", path, body);
export const del = (path) => call("DELETE", path);

/**
 * Sends one A2A text message and resolves with the agent's text. When the agent streams
 * (`capabilities.streaming`), `onPartial` gets the text as it arrives.
 */
export async function sendMessage(workspaceId, text, streaming, onPartial) {
  const request = {
    jsonrpc: "2.0",
    id: crypto.randomUUID(),
    method: streaming ? "message/stream" : "message/send",
    params: {
      message: {
        role: "user",
        messageId: crypto.randomUUID(),
        parts: [{ kind: "text", text }],
      },
    },
  };
  const response = await fetch(`/workspaces/${workspaceId}/a2a`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", accept: streaming ? "text/event-stream" : "application/json" },
    body: JSON.stringify(request),
  });
  const type = response.headers.get("content-type") || "";
  if (streaming && response.ok && type.startsWith("text/event-stream")) {
    return readStream(response, onPartial);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.error) || response.statusText);
  }
  if (data && data.error) {
    throw new ApiError(response.status, data.error.message || JSON.stringify(data.error));
  }
  return textOf(data && data.result);
}

async function readStream(response, onPartial) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const payload = frame
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!payload) continue;
      try {
        const event = JSON.parse(payload);
        const chunk = textOf(event.result);
        if (chunk) {
          text = event.result && event.result.append ? text + chunk : chunk;
          onPartial(text);
        }
      } catch {
        // A frame that is not JSON-RPC is not the agent's text.
      }
    }
  }
  return text;
}

/** The text parts of an A2A result: a Message, a Task (status message and artifacts) or an update. */
export function textOf(result) {
  if (!result) return "";
  const parts = [];
  const collect = (list) => (list || []).forEach((part) => {
    if ((part.kind === "text" || part.type === "text") && part.text) parts.push(part.text);
  });
  collect(result.parts);
  if (result.status && result.status.message) collect(result.status.message.parts);
  (result.artifacts || []).forEach((artifact) => collect(artifact.parts));
  if (result.artifact) collect(result.artifact.parts);
  return parts.join("\n");
}

/**
 * The live event stream. Calls `onEvent` per frame, `onState("live" | "connecting")` as the
 * link changes, and `onResync()` after every (re)connect, so the caller can refetch what it
 * may have missed.
 */
export function connectEvents({ onEvent, onState, onResync }) {
  let delay = 500;
  let socket = null;
  let stopped = false;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws`);
    socket.onopen = () => {
      delay = 500;
      onState("live");
      onResync();
    };
    socket.onmessage = (message) => {
      try {
        onEvent(JSON.parse(message.data));
      } catch {
        // Frames are JSON; anything else is ignored.
      }
    };
    socket.onclose = () => {
      if (stopped) return;
      onState("connecting");
      const retry = () => setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
      // A socket the server closed because the session ended must not retry forever.
      call("GET", "/console/session").then(retry, (error) => {
        if (error.status === 401) listeners.forEach((listener) => listener());
        else retry();
      });
    };
  };
  open();
  return () => {
    stopped = true;
    if (socket) socket.close();
  };
}
