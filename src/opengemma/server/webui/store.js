// What the page keeps in the browser (localStorage, this origin only): conversations, settings
// and the API key. Export/import move conversations as one JSON document.

const KEYS = {
  conversations: "opengemma.conversations.v1",
  current: "opengemma.current.v1",
  settings: "opengemma.settings.v1",
  apiKey: "opengemma.apiKey.v1",
};
export const EXPORT_FORMAT = "opengemma.conversations";

// Gemma's published sampling defaults (generation_config.json: temperature 1, top-k 64, top-p 0.95).
export const DEFAULT_SETTINGS = Object.freeze({
  system: "",
  temperature: 1.0,
  top_p: 0.95,
  top_k: 64,
  min_p: 0,
  max_tokens: 512,
  seed: "",
  stop: "",
  json_schema: "",
  model: "",
});

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function write(key, value) {
  localStorage.setItem(key, JSON.stringify(value));
}

export function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
}

export function newConversation(title = "New chat") {
  const now = Date.now();
  return { id: newId(), title, created: now, updated: now, messages: [] };
}

export function loadConversations() {
  const list = read(KEYS.conversations, []);
  try {
    return Array.isArray(list) ? list.map(checkConversation) : [];
  } catch {
    return []; // a damaged store starts over rather than breaking the page
  }
}

export function saveConversations(list) {
  write(KEYS.conversations, list);
}

export const loadCurrent = () => read(KEYS.current, null);
export const saveCurrent = (id) => write(KEYS.current, id);

export function loadSettings() {
  const saved = read(KEYS.settings, {});
  const out = { ...DEFAULT_SETTINGS };
  for (const key of Object.keys(DEFAULT_SETTINGS)) {
    if (saved && typeof saved[key] === typeof DEFAULT_SETTINGS[key]) out[key] = saved[key];
  }
  return out;
}

export const saveSettings = (settings) => write(KEYS.settings, settings);
export const loadApiKey = () => read(KEYS.apiKey, "");
export const saveApiKey = (key) => write(KEYS.apiKey, key);

function fail(where, what) {
  throw new Error(`${where}: ${what}`);
}

const STAT_KEYS = ["tokens", "prompt_tokens", "ttft_ms", "elapsed_ms", "tokens_per_s"];

function checkMessage(m, where) {
  if (!m || typeof m !== "object") fail(where, "a message must be an object");
  if (m.role !== "user" && m.role !== "assistant") fail(where, 'role must be "user" or "assistant"');
  if (typeof m.content !== "string") fail(where, "content must be a string");
  const out = { role: m.role, content: m.content };
  if (typeof m.status === "string") out.status = m.status.slice(0, 32);
  if (typeof m.error === "string") out.error = m.error.slice(0, 2000);
  if (m.stats && typeof m.stats === "object") {
    out.stats = {};
    for (const k of STAT_KEYS) if (typeof m.stats[k] === "number") out.stats[k] = m.stats[k];
    for (const k of ["finish_reason", "model"]) {
      if (typeof m.stats[k] === "string") out.stats[k] = m.stats[k].slice(0, 64);
    }
    if (typeof m.stats.watermarked === "boolean") out.stats.watermarked = m.stats.watermarked;
  }
  return out;
}

function checkConversation(c, n = 0) {
  const where = `conversation ${n + 1}`;
  if (!c || typeof c !== "object") fail(where, "must be an object");
  if (!Array.isArray(c.messages)) fail(where, "needs a messages list");
  const now = Date.now();
  return {
    id: typeof c.id === "string" && c.id ? c.id.slice(0, 64) : newId(),
    title: typeof c.title === "string" && c.title.trim() ? c.title.slice(0, 200) : "Imported chat",
    created: Number.isFinite(c.created) ? c.created : now,
    updated: Number.isFinite(c.updated) ? c.updated : now,
    messages: c.messages.map((m, k) => checkMessage(m, `${where}, message ${k + 1}`)),
  };
}

export function exportDocument(list) {
  return JSON.stringify({ format: EXPORT_FORMAT, version: 1, exported: new Date().toISOString(),
    conversations: list }, null, 2);
}

// Conversations from an exported document (or a bare list); throws Error saying what is wrong.
export function parseImport(text, existing) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`the file is not JSON (${e.message})`);
  }
  const list = Array.isArray(data) ? data : data && data.conversations;
  if (!Array.isArray(list)) {
    throw new Error(`expected an export of this page: {"format": "${EXPORT_FORMAT}", "conversations": [...]}`);
  }
  const taken = new Set(existing.map((c) => c.id));
  return list.map((c, n) => {
    const conv = checkConversation(c, n);
    if (taken.has(conv.id)) conv.id = newId();
    taken.add(conv.id);
    return conv;
  });
}
