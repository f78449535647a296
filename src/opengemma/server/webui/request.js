// The request a reply is asked with: the conversation as API messages, and the settings as
// sampling fields (pure functions of what they are given).

export const FAILED = new Set(["blocked", "filtered", "error"]);
export const NUMERIC = ["temperature", "top_p", "top_k", "min_p", "max_tokens"];

// The API messages answering conv.messages[0..upto): successful pairs, then the last user turn.
export function apiMessages(msgs, system) {
  const out = [];
  for (let k = 0; k < msgs.length - 1; k++) {
    const reply = msgs[k + 1];
    if (msgs[k].role === "user" && reply.role === "assistant") {
      if (reply.content && !FAILED.has(reply.status)) {
        out.push({ role: "user", content: msgs[k].content }, { role: "assistant", content: reply.content });
      }
      k++;
    }
  }
  out.push({ role: "user", content: msgs[msgs.length - 1].content });
  if (system.trim()) out.unshift({ role: "system", content: system });
  return out;
}

export function responseFormat(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`the JSON schema in Settings is not JSON (${e.message})`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error("the JSON schema in Settings must be a JSON object");
  }
  const wrapped = parsed.schema && typeof parsed.schema === "object" && !parsed.type;
  const spec = wrapped ? { name: parsed.name || "response", schema: parsed.schema } : { name: "response", schema: parsed };
  return { type: "json_schema", json_schema: spec };
}

export function requestBody(s, models, messages) {
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  const model = s.model || models[0]?.id;
  if (model) body.model = model;
  for (const k of NUMERIC) body[k] = s[k];
  if (String(s.seed).trim()) {
    if (!/^-?\d+$/.test(String(s.seed).trim())) throw new Error("the seed in Settings must be an integer");
    body.seed = Number(String(s.seed).trim());
  }
  const stops = s.stop.split("\n").filter((x) => x.length > 0).slice(0, 4);
  if (stops.length) body.stop = stops;
  if (s.json_schema.trim()) body.response_format = responseFormat(s.json_schema);
  return body;
}
