// The server's HTTP API, same origin: JSON calls, and chat completions streamed over SSE.

export class ApiError extends Error {
  constructor(status, message, code = null, param = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

function headers(apiKey, json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

async function errorOf(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: fall through to the status line
  }
  const e = body && body.error;
  if (e && typeof e.message === "string") return new ApiError(res.status, e.message, e.code, e.param);
  return new ApiError(res.status, `HTTP ${res.status} ${res.statusText}`);
}

export async function getJSON(path, apiKey) {
  const res = await fetch(path, { headers: headers(apiKey, false) });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function postJSON(path, body, apiKey) {
  const res = await fetch(path, { method: "POST", headers: headers(apiKey, true), body: JSON.stringify(body) });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

// POST a streaming chat completion; calls onChunk(chunk) for each `data:` JSON object. Returns
// when the stream sends [DONE] or ends; throws ApiError (HTTP or in-stream error) or the
// AbortError of `signal`.
export async function streamChat(body, { apiKey, signal, onChunk }) {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(apiKey, true),
    body: JSON.stringify(body),
    signal,
  });
  if (!res.ok) throw await errorOf(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        const e = chunk.error;
        throw new ApiError(0, e.message || "the stream failed", e.code, e.param);
      }
      onChunk(chunk);
    }
    if (done) return;
  }
}
