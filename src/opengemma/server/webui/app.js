// The chat page: conversations in the sidebar, settings, streaming replies, watermark check.

import { ApiError, getJSON, postJSON, streamChat } from "./api.js";
import { apiMessages, FAILED, NUMERIC, requestBody, responseFormat } from "./request.js";
import * as store from "./store.js";
import { detectionView, editor, fillAssistant, messageArticle } from "./view.js";

const $ = (id) => document.getElementById(id);
const S = {
  convs: store.loadConversations(),
  currentId: store.loadCurrent(),
  settings: store.loadSettings(),
  apiKey: store.loadApiKey(),
  info: null,
  models: [],
  run: null, // {controller, conv, index} while a reply streams
};

// ---- conversations ------------------------------------------------------------------------

function current() {
  let conv = S.convs.find((c) => c.id === S.currentId);
  if (!conv) {
    conv = S.convs[0] || store.newConversation();
    if (!S.convs.includes(conv)) S.convs.unshift(conv);
    S.currentId = conv.id;
  }
  return conv;
}

function persist() {
  try {
    store.saveConversations(S.convs);
    store.saveCurrent(S.currentId);
  } catch (e) {
    notice(`Could not save in this browser: ${e.message}`);
  }
}

function renderSidebar() {
  const list = $("conv-list");
  list.replaceChildren();
  const sorted = [...S.convs].sort((a, b) => b.updated - a.updated);
  for (const conv of sorted) {
    const li = document.createElement("li");
    li.className = "conv" + (conv.id === S.currentId ? " active" : "");
    li.dataset.id = conv.id;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conv-open";
    open.textContent = conv.title;
    if (conv.id === S.currentId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => select(conv.id));
    const rename = iconButton("✎", `Rename “${conv.title}”`, () => startRename(li, conv));
    rename.classList.add("conv-rename");
    const del = iconButton("×", `Delete “${conv.title}”`, () => remove(conv.id));
    del.classList.add("conv-delete");
    li.append(open, rename, del);
    list.append(li);
  }
}

function iconButton(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "icon";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.title = label;
  b.addEventListener("click", onClick);
  return b;
}

function startRename(li, conv) {
  const input = document.createElement("input");
  input.className = "rename-box";
  input.value = conv.title;
  input.setAttribute("aria-label", "New name of the conversation");
  li.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    if (keep && input.value.trim()) {
      conv.title = input.value.trim().slice(0, 200);
      persist();
    }
    renderSidebar();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    if (e.key === "Escape") {
      e.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

function select(id) {
  S.currentId = id;
  persist();
  renderSidebar();
  renderMessages();
  $("sidebar").classList.remove("open");
  $("open-sidebar").setAttribute("aria-expanded", "false");
}

function newChat() {
  const conv = current();
  if (conv.messages.length === 0) return select(conv.id);
  const fresh = store.newConversation();
  S.convs.unshift(fresh);
  select(fresh.id);
  $("prompt").focus();
}

function remove(id) {
  if (S.run && S.run.conv.id === id) stop();
  S.convs = S.convs.filter((c) => c.id !== id);
  if (S.currentId === id) S.currentId = S.convs[0]?.id ?? null;
  current();
  select(S.currentId);
}

function exportAll() {
  const blob = new Blob([store.exportDocument(S.convs)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `opengemma-conversations-${new Date().toISOString().slice(0, 10)}.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function importFile(file) {
  try {
    const added = store.parseImport(await file.text(), S.convs);
    S.convs.push(...added);
    if (added.length) S.currentId = added[0].id;
    persist();
    select(S.currentId);
    notice(`Imported ${added.length} conversation${added.length === 1 ? "" : "s"}.`, "info");
  } catch (e) {
    notice(`Import failed: ${e.message}`);
  }
}

// ---- messages -----------------------------------------------------------------------------

function viewOpts(conv, index) {
  const streaming = !!S.run && S.run.conv === conv && S.run.index === index;
  return {
    busy: !!S.run,
    streaming,
    isLast: index === conv.messages.length - 1,
    canCheck: !!S.info?.watermark?.enabled,
  };
}

function renderMessages() {
  const conv = current();
  const box = $("messages");
  box.replaceChildren(...conv.messages.map((m, i) => messageArticle(m, i, viewOpts(conv, i))));
  $("empty").hidden = conv.messages.length > 0;
  box.scrollTop = box.scrollHeight;
}

let pending = null;
function scheduleReply() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    updateReply();
  }, 40);
}

function updateReply() {
  if (!S.run || S.run.conv !== current()) return;
  const { conv, index } = S.run;
  const article = $("messages").querySelector(`article[data-index="${index}"]`);
  if (!article) return;
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  fillAssistant(article, conv.messages[index], index, viewOpts(conv, index));
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function describe(e) {
  if (e instanceof ApiError && e.status === 401) {
    openPanel("settings");
    $("set-api-key").focus();
    return `${e.message} (enter the server's API key in Settings)`;
  }
  if (e instanceof ApiError) return e.message;
  return `could not reach the server: ${e.message}`;
}

async function generate(conv, index) {
  const msg = conv.messages[index];
  Object.assign(msg, { content: "", stats: {} });
  delete msg.status;
  delete msg.error;
  let body;
  try {
    body = requestBody(S.settings, S.models, apiMessages(conv.messages.slice(0, index), S.settings.system));
  } catch (e) {
    Object.assign(msg, { status: "error", error: e.message });
    persist();
    return renderMessages();
  }
  const controller = new AbortController();
  S.run = { controller, conv, index };
  setRunning(true);
  const t0 = performance.now();
  let first = null, chunks = 0, usage = null, finish = null;
  try {
    await streamChat(body, {
      apiKey: S.apiKey,
      signal: controller.signal,
      onChunk(chunk) {
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const text = choice.delta && choice.delta.content;
          if (text) {
            if (first === null) first = performance.now();
            msg.content += text;
            chunks++;
            scheduleReply();
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      },
    });
    if (finish === "content_filter") msg.status = "filtered";
    else if (finish === null) Object.assign(msg, { status: "error", error: "the stream ended without a finish reason" });
  } catch (e) {
    if (e.name === "AbortError") msg.status = "stopped";
    else if (e instanceof ApiError && e.code === "content_policy_violation") Object.assign(msg, { status: "blocked", error: e.message });
    else Object.assign(msg, { status: "error", error: describe(e) });
  }
  const end = performance.now();
  const tokens = usage ? usage.completion_tokens : chunks;
  msg.stats = {
    tokens,
    elapsed_ms: end - t0,
    finish_reason: finish ?? undefined,
    model: body.model,
    watermarked: !!(S.info?.watermark?.enabled && body.temperature > 0 && msg.content && !FAILED.has(msg.status)),
  };
  if (usage) msg.stats.prompt_tokens = usage.prompt_tokens;
  if (first !== null) msg.stats.ttft_ms = first - t0;
  if (first !== null && tokens > 1 && end > first) msg.stats.tokens_per_s = (tokens - 1) / ((end - first) / 1000);
  S.run = null;
  conv.updated = Date.now();
  persist();
  setRunning(false);
  if (conv === current()) renderMessages();
  renderSidebar();
}

function setRunning(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  document.body.classList.toggle("running", on);
  if (on) renderMessages();
}

function stop() {
  if (S.run) S.run.controller.abort();
}

function send(text) {
  if (S.run || !text.trim()) return;
  const conv = current();
  if (conv.messages.length === 0 && conv.title === "New chat") conv.title = text.trim().slice(0, 48);
  conv.messages.push({ role: "user", content: text }, { role: "assistant", content: "" });
  conv.updated = Date.now();
  $("prompt").value = "";
  persist();
  renderSidebar();
  generate(conv, conv.messages.length - 1);
}

function onMessageClick(e) {
  const target = e.target.closest("button");
  if (!target) return;
  const conv = current();
  if (target.classList.contains("copy")) {
    const code = target.closest(".code-block").querySelector("code").textContent;
    return copy(code, target);
  }
  const index = Number(target.dataset.index);
  const msg = conv.messages[index];
  if (!msg || S.run) return;
  if (target.dataset.action === "regenerate") {
    generate(conv, index);
  } else if (target.dataset.action === "copy-reply") {
    copy(msg.content, target);
  } else if (target.dataset.action === "check") {
    openPanel("check-panel");
    $("check-text").value = msg.content;
    checkText();
  } else if (target.dataset.action === "edit") {
    const article = target.closest("article");
    editor(article, msg.content, (text) => {
      if (!text.trim()) return;
      msg.content = text;
      conv.messages.splice(index + 1);
      conv.messages.push({ role: "assistant", content: "" });
      generate(conv, index + 1);
    }, renderMessages);
  }
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// ---- settings, server, panels -------------------------------------------------------------

function fillSettings() {
  const form = $("settings-form");
  for (const [k, v] of Object.entries(S.settings)) if (form.elements[k]) form.elements[k].value = v;
  $("set-api-key").value = S.apiKey;
}

function readSettings() {
  const form = $("settings-form");
  for (const k of Object.keys(store.DEFAULT_SETTINGS)) {
    if (!form.elements[k]) continue;
    const raw = form.elements[k].value;
    if (NUMERIC.includes(k)) {
      const n = Number(raw);
      S.settings[k] = raw.trim() === "" || !Number.isFinite(n) ? store.DEFAULT_SETTINGS[k] : n;
    } else {
      S.settings[k] = raw;
    }
  }
  const schemaError = $("schema-error");
  schemaError.hidden = true;
  if (S.settings.json_schema.trim()) {
    try {
      responseFormat(S.settings.json_schema);
    } catch (e) {
      schemaError.textContent = e.message;
      schemaError.hidden = false;
    }
  }
  store.saveSettings(S.settings);
}

function openPanel(id, force) {
  const panel = $(id);
  const show = force ?? panel.hidden;
  panel.hidden = !show;
  const toggle = id === "settings" ? $("toggle-settings") : $("toggle-check");
  toggle.setAttribute("aria-expanded", String(show));
}

async function checkText() {
  const out = $("check-result");
  out.replaceChildren();
  out.textContent = "Checking…";
  try {
    const result = await postJSON("/v1/watermark/detect", { text: $("check-text").value }, S.apiKey);
    out.replaceChildren(detectionView(result));
  } catch (e) {
    out.textContent = describe(e);
  }
}

function badge(id, cls, text, title) {
  const b = document.createElement("span");
  b.id = id;
  b.className = `badge ${cls}`;
  b.textContent = text;
  b.title = title;
  return b;
}

async function loadServer() {
  try {
    S.info = await getJSON("/v1/info");
  } catch {
    S.info = null; // a server without /v1/info: no badges
  }
  const badges = [];
  const guard = S.info?.guard?.stages || [];
  if (guard.length) {
    badges.push(badge("badge-guard", "guard", `Guard: ${guard.join(" + ")}`,
      `Policy classifier on ${guard.join(" and ")} (${S.info.guard.policies.join(", ")})`));
  }
  if (S.info?.watermark?.enabled) {
    badges.push(badge("badge-watermark", "watermark", "Watermark on", "Sampled replies (temperature > 0) carry this server's SynthID Text watermark"));
  }
  if (S.info?.auth_required) badges.push(badge("badge-auth", "muted", "API key", "This server requires an API key"));
  $("badges").replaceChildren(...badges);
  $("toggle-check").hidden = !S.info?.watermark?.enabled;
  if (S.info?.auth_required && !S.apiKey) notice("This server requires an API key: enter it in Settings.", "info");
  try {
    S.models = (await getJSON("/v1/models")).data || [];
  } catch (e) {
    notice(`Could not list the models: ${describe(e)}`);
  }
  const select = $("model");
  select.replaceChildren(...S.models.map((m) => new Option(m.id, m.id)));
  if (!S.models.some((m) => m.id === S.settings.model)) S.settings.model = S.models[0]?.id ?? "";
  select.value = S.settings.model;
  renderMessages();
}

function notice(text, kind = "error") {
  $("notice-text").textContent = text;
  $("notice").dataset.kind = kind;
  $("notice").hidden = false;
}

function bind() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send($("prompt").value);
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send($("prompt").value);
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && S.run) {
      e.preventDefault();
      stop();
    }
  });
  $("stop").addEventListener("click", stop);
  $("messages").addEventListener("click", onMessageClick);
  $("new-chat").addEventListener("click", newChat);
  $("export").addEventListener("click", exportAll);
  $("import").addEventListener("click", () => $("import-file").click());
  $("import-file").addEventListener("change", (e) => {
    if (e.target.files[0]) importFile(e.target.files[0]);
    e.target.value = "";
  });
  $("settings-form").addEventListener("input", readSettings);
  $("set-api-key").addEventListener("input", (e) => {
    S.apiKey = e.target.value.trim();
    store.saveApiKey(S.apiKey);
    if (S.apiKey && $("notice").dataset.kind === "info") $("notice").hidden = true;
  });
  $("reset-settings").addEventListener("click", () => {
    S.settings = { ...store.DEFAULT_SETTINGS, model: S.settings.model };
    store.saveSettings(S.settings);
    fillSettings();
  });
  $("model").addEventListener("change", (e) => {
    S.settings.model = e.target.value;
    store.saveSettings(S.settings);
  });
  $("toggle-settings").addEventListener("click", () => openPanel("settings"));
  $("toggle-check").addEventListener("click", () => openPanel("check-panel"));
  for (const b of document.querySelectorAll(".close-panel")) {
    b.addEventListener("click", () => openPanel(b.dataset.panel, false));
  }
  $("check-run").addEventListener("click", checkText);
  $("notice-close").addEventListener("click", () => { $("notice").hidden = true; });
  $("open-sidebar").addEventListener("click", () => {
    const open = $("sidebar").classList.toggle("open");
    $("open-sidebar").setAttribute("aria-expanded", String(open));
  });
  $("close-sidebar").addEventListener("click", () => {
    $("sidebar").classList.remove("open");
    $("open-sidebar").setAttribute("aria-expanded", "false");
  });
}

current();
persist();
fillSettings();
bind();
renderSidebar();
renderMessages();
loadServer().finally(() => document.body.setAttribute("data-ready", "true"));
