// Messages as DOM: one <article> per turn, built from text nodes and known elements only.

import { renderMarkdown } from "./markdown.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, action, index, aria) {
  const b = el("button", "small", label);
  b.type = "button";
  b.dataset.action = action;
  b.dataset.index = String(index);
  if (aria) b.setAttribute("aria-label", aria);
  return b;
}

const STATUS = {
  blocked: ["guard", "Blocked by the input guard"],
  filtered: ["guard", "Filtered by the output guard"],
  stopped: ["muted", "Stopped"],
  error: ["error", "Error"],
};

export function formatStats(stats) {
  const parts = [];
  if (!stats) return parts;
  if (typeof stats.tokens === "number") parts.push(["tokens", `${stats.tokens} tokens`]);
  if (typeof stats.tokens_per_s === "number") parts.push(["speed", `${stats.tokens_per_s.toFixed(1)} tok/s`]);
  if (typeof stats.ttft_ms === "number") parts.push(["ttft", `TTFT ${(stats.ttft_ms / 1000).toFixed(2)} s`]);
  if (stats.finish_reason === "length") parts.push(["finish", "cut at max tokens"]);
  return parts;
}

function meta(msg, index, opts) {
  const box = el("div", "meta");
  const status = STATUS[msg.status];
  if (status) {
    const badge = el("span", `badge ${status[0]} status-${msg.status}`, status[1]);
    badge.setAttribute("role", "status");
    box.append(badge);
  }
  if (msg.status === "filtered") {
    box.append(el("span", "note", "The server's policy classifier withheld this reply (finish_reason content_filter)."));
  }
  if (msg.error) box.append(el("span", "note error-text", msg.error));
  if (msg.stats && msg.stats.watermarked) {
    const wm = el("span", "badge watermark reply-watermark", "Watermark applied");
    wm.title = "Sampled with this server's SynthID Text watermark (Check tests whether it is detectable)";
    box.append(wm);
  }
  for (const [name, text] of formatStats(msg.stats)) box.append(el("span", `stat stat-${name}`, text));
  if (!opts.busy) {
    const actions = el("span", "actions");
    if (opts.isLast) actions.append(button("Regenerate", "regenerate", index, "Regenerate this reply"));
    if (opts.canCheck && msg.content) actions.append(button("Check", "check", index, "Check this reply for the watermark"));
    if (msg.content) actions.append(button("Copy", "copy-reply", index, "Copy this reply"));
    box.append(actions);
  }
  return box;
}

export function fillAssistant(article, msg, index, opts) {
  const content = article.querySelector(".content");
  content.replaceChildren(renderMarkdown(msg.content));
  article.classList.toggle("streaming", !!opts.streaming);
  const old = article.querySelector(".meta");
  const fresh = meta(msg, index, opts);
  if (old) old.replaceWith(fresh);
  else article.append(fresh);
}

function userArticle(msg, index, opts) {
  const article = el("article", "msg user");
  article.setAttribute("aria-label", "You");
  article.dataset.index = String(index);
  article.append(el("div", "role", "You"));
  article.append(el("div", "content plain", msg.content));
  if (!opts.busy) {
    const actions = el("div", "meta");
    const box = el("span", "actions");
    box.append(button("Edit", "edit", index, "Edit this message and regenerate"));
    actions.append(box);
    article.append(actions);
  }
  return article;
}

export function messageArticle(msg, index, opts) {
  if (msg.role === "user") return userArticle(msg, index, opts);
  const article = el("article", "msg assistant");
  article.setAttribute("aria-label", "opengemma");
  article.dataset.index = String(index);
  article.append(el("div", "role", "Gemma"), el("div", "content markdown"));
  fillAssistant(article, msg, index, opts);
  return article;
}

// An inline editor replacing a user turn's text: Save & regenerate / Cancel.
export function editor(article, text, onSave, onCancel) {
  const content = article.querySelector(".content");
  const area = el("textarea", "edit-box");
  area.value = text;
  area.rows = Math.min(10, Math.max(2, text.split("\n").length));
  area.setAttribute("aria-label", "Edit your message");
  const save = el("button", "small primary", "Save & regenerate");
  save.type = "button";
  const cancel = el("button", "small", "Cancel");
  cancel.type = "button";
  const bar = el("div", "edit-bar");
  bar.append(save, cancel);
  content.replaceChildren(area, bar);
  article.querySelector(".meta")?.remove();
  save.addEventListener("click", () => onSave(area.value));
  cancel.addEventListener("click", onCancel);
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      onSave(area.value);
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      onCancel();
    }
  });
  area.focus();
}

export function formatP(p) {
  if (p === null || p === undefined) return "n/a";
  return p < 1e-3 ? p.toExponential(2) : p.toFixed(4);
}

export function detectionView(result) {
  const box = el("div", result.watermarked ? "verdict yes" : "verdict no");
  box.dataset.pValue = String(result.p_value);
  box.dataset.watermarked = String(result.watermarked);
  box.append(el("strong", "", result.watermarked ? "Watermarked" : "Not watermarked"));
  box.append(el("div", "p-value", `p-value ${formatP(result.p_value)} (called watermarked below ${result.alpha})`));
  const score = result.score === null ? "n/a" : result.score.toFixed(4);
  box.append(el("div", "note", `${result.num_scored} n-grams scored of ${result.num_tokens} tokens · weighted mean ${score}`));
  return box;
}
