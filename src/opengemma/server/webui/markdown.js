// Markdown -> DOM nodes, sanitizing by construction: every piece of text becomes a text node and
// every element comes from a fixed list made with createElement, so HTML inside a reply (a
// <script>, an onerror attribute) is shown as the characters it is and never parsed. Links keep
// only http(s): and mailto: targets; images are shown as links (nothing is fetched).
//
// Covers what chat replies use: ATX headings, paragraphs with line breaks, fenced code blocks
// (an unclosed fence, as mid-stream, renders as code so far), bullet and numbered lists with
// nesting, block quotes, rules, GitHub tables, **strong**, *em*, ~~del~~, `code`, [links](url),
// <autolinks> and backslash escapes.

import { highlight } from "./highlight.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?: +(.*)|$)/;
const TABLE_SEP = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;

export function safeUrl(url) {
  // browsers drop control characters and blanks inside a URL's scheme ("java\tscript:")
  const bare = String(url).replace(/[\u0000-\u0020\u007f-\u009f]/g, "");
  return /^(https?:\/\/|mailto:)/i.test(bare) ? bare : null;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function link(text, url) {
  const href = safeUrl(url);
  if (href === null) return null;
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  renderInline(text, a);
  return a;
}

// Inline rules, tried in order at each position; each returns [node | null, length] or null.
const INLINE = [
  [/\\([\\`*_{}[\]()#+\-.!~|<>])/y, (m) => [document.createTextNode(m[1]), m[0].length]],
  [/(`+)([\s\S]*?[^`])\1(?!`)/y, (m) => [el("code", "", m[2].replace(/^ (.*) $/s, "$1")), m[0].length]],
  [/!\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"\n]*")?\s*\)/y, (m) => {
    const a = link("image: " + (m[1] || m[2]), m[2]);
    return a ? [a, m[0].length] : null;
  }],
  [/\[((?:[^\]\n\\]|\\.)+)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"\n]*")?\s*\)/y, (m) => {
    const a = link(m[1], m[2]);
    return a ? [a, m[0].length] : null;
  }],
  [/<((?:https?:\/\/|mailto:)[^\s<>]+)>/y, (m) => [link(m[1], m[1]), m[0].length]],
  [/(\*\*|__)(?=\S)([\s\S]*?\S)\1/y, (m) => [wrap("strong", m[2]), m[0].length]],
  [/~~(?=\S)([\s\S]*?\S)~~/y, (m) => [wrap("del", m[1]), m[0].length]],
  [/\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/y, (m) => [wrap("em", m[1]), m[0].length]],
  [/(?<![\w])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\w])/y, (m) => [wrap("em", m[1]), m[0].length]],
  [/https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*_~]/y, (m) => [link(m[0], m[0]), m[0].length]],
  [/ {2,}\n|\\\n|\n/y, () => [el("br"), null]],
];

function wrap(tag, text) {
  const node = el(tag);
  renderInline(text, node);
  return node;
}

export function renderInline(text, parent) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(document.createTextNode(plain));
    plain = "";
  };
  let i = 0;
  outer: while (i < text.length) {
    for (const [re, make] of INLINE) {
      re.lastIndex = i;
      const m = re.exec(text);
      if (!m) continue;
      const made = make(m);
      if (!made) continue;
      flush();
      parent.append(made[0]);
      i += made[1] ?? m[0].length;
      continue outer;
    }
    plain += text[i++];
  }
  flush();
}

function codeBlock(code, lang) {
  const box = el("div", "code-block");
  const bar = el("div", "code-bar");
  bar.append(el("span", "code-lang", lang || "text"));
  const copy = el("button", "copy", "Copy");
  copy.type = "button";
  copy.setAttribute("aria-label", "Copy code" + (lang ? ` (${lang})` : ""));
  bar.append(copy);
  const pre = el("pre");
  const codeEl = el("code");
  if (lang) codeEl.dataset.lang = lang;
  highlight(code, lang, codeEl);
  pre.append(codeEl);
  box.append(bar, pre);
  return box;
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(lines) {
  const head = splitRow(lines[0]);
  const aligns = splitRow(lines[1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
  const wrapBox = el("div", "table-wrap");
  const t = el("table");
  const row = (cells, tag) => {
    const tr = el("tr");
    head.forEach((_, k) => {
      const cell = el(tag);
      if (aligns[k]) cell.className = "align-" + aligns[k];
      renderInline(cells[k] ?? "", cell);
      tr.append(cell);
    });
    return tr;
  };
  const thead = el("thead");
  thead.append(row(head, "th"));
  const tbody = el("tbody");
  for (const line of lines.slice(2)) tbody.append(row(splitRow(line), "td"));
  t.append(thead, tbody);
  wrapBox.append(t);
  return wrapBox;
}

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
    ITEM.test(line) || (line.includes("|") && next !== undefined && TABLE_SEP.test(next));
}

function list(lines, i, parent) {
  const first = ITEM.exec(lines[i]);
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  const indent = first[1].length;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3] ?? ""];
    const inner = indent + m[2].length + 1;
    i++;
    while (i < lines.length) {
      const line = lines[i];
      const sub = ITEM.exec(line);
      if (line.trim() === "") {
        const after = lines[i + 1];
        if (after === undefined || after.search(/\S/) < inner) break;
        body.push("");
      } else if (sub && sub[1].length <= indent) {
        break;
      } else if (line.search(/\S/) >= inner || sub) {
        body.push(line.slice(Math.min(inner, line.search(/\S/))));
      } else if (startsBlock(line, lines[i + 1])) {
        break;
      } else {
        body.push(line.trim()); // a lazy continuation of the item's paragraph
      }
      i++;
    }
    const li = el("li");
    const task = /^\[([ xX])\] (.*)$/s.exec(body[0]);
    if (task) {
      const box = el("input");
      box.type = "checkbox";
      box.disabled = true;
      box.checked = task[1] !== " ";
      li.append(box, " ");
      body[0] = task[2];
    }
    const joined = body.join("\n");
    const nested = body.some((l, k) => k > 0 && (l.trim() === "" || startsBlock(l, body[k + 1])));
    if (nested) renderBlocks(joined, li);
    else renderInline(joined, li);
    node.append(li);
  }
  parent.append(node);
  return i;
}

// Block-level parse of `text` into `parent`.
export function renderBlocks(text, parent) {
  const lines = text.replace(/\r\n?/g, "\n").replace(/\t/g, "    ").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (line.trim() === "") {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !(lines[i].trim().startsWith(fence[0].repeat(fence.length)) &&
             /^[`~]+$/.test(lines[i].trim()))) body.push(lines[i++]);
      i++; // the closing fence (or past the end while a reply is still streaming)
      parent.append(codeBlock(body.join("\n"), m[2].toLowerCase()));
    } else if ((m = HEADING.exec(line))) {
      const h = el("h" + Math.min(m[1].length + 2, 6));
      renderInline(m[2] || "", h);
      parent.append(h);
      i++;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i++;
      }
      const q = el("blockquote");
      renderBlocks(body.join("\n"), q);
      parent.append(q);
    } else if (ITEM.test(line) && (ITEM.exec(line)[3] !== undefined || lines[i + 1]?.trim())) {
      i = list(lines, i, parent);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      const rows = [line, lines[i + 1]];
      i += 2;
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(lines[i++]);
      parent.append(table(rows));
    } else {
      const body = [line];
      i++;
      while (i < lines.length && lines[i].trim() !== "" && !startsBlock(lines[i], lines[i + 1])) {
        body.push(lines[i++]);
      }
      const p = el("p");
      renderInline(body.join("\n").trim(), p);
      parent.append(p);
    }
  }
}

// The whole reply as a fragment (cheap to swap in while streaming).
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  renderBlocks(String(text ?? ""), frag);
  return frag;
}
