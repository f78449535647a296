// A small code highlighter: one regular expression per language family finds comments,
// strings, numbers and words; words are keywords, literals or function names by lookup. The
// output is text nodes inside <span class="tok-..."> elements (never HTML from the code).

const words = (s) => new Set(s.split(" "));

const C_STRING = String.raw`"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?`;
const NUMBER = String.raw`\b(?:0[xX][\da-fA-F_]+|0[bB][01_]+|\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?)[a-zA-Z]*\b`;
const WORD = String.raw`[A-Za-z_$][\w$]*`;

const FAMILIES = {
  python: {
    comment: String.raw`#[^\n]*`,
    string: String.raw`[rRbBfFuU]{0,2}(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)`,
    extra: String.raw`@[A-Za-z_][\w.]*`,
    keywords: words("and as assert async await break class continue def del elif else except finally for from global if import in is lambda match case nonlocal not or pass raise return try while with yield"),
    literals: words("True False None self cls print len range int str float list dict set tuple"),
  },
  js: {
    comment: String.raw`\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)`,
    string: C_STRING + String.raw`|\x60(?:[^\x60\\]|\\[\s\S])*\x60?`,
    keywords: words("async await break case catch class const continue debugger default delete do else export extends finally for from function if import in instanceof let new of return static super switch this throw try typeof var void while with yield interface type enum implements private public protected readonly as"),
    literals: words("true false null undefined NaN Infinity console window document"),
  },
  c: {
    comment: String.raw`\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)|^\s*#\s*\w+`,
    string: C_STRING,
    keywords: words("auto break case catch char class const constexpr continue default delete do double else enum extern final float for fn func go goto if impl import in inline int let long loop match mod move mut namespace new override package private protected pub public register return short signed sizeof static struct super switch template this throw trait try typedef typename union unsigned use using var virtual void volatile while bool byte chan defer interface map range select type string i8 i16 i32 i64 u8 u16 u32 u64 usize f32 f64 where dyn crate self Self"),
    literals: words("true false null nullptr NULL nil None Some Ok Err"),
  },
  shell: {
    comment: String.raw`(?:^|\s)#[^\n]*`,
    string: String.raw`"(?:[^"\\]|\\[\s\S])*"?|'[^']*'?`,
    extra: String.raw`\$\{[^}\n]*\}?|\$\w+`,
    keywords: words("if then else elif fi for while until do done case esac in function return export local set unset source alias sudo cd echo exit"),
    literals: words("true false"),
  },
  sql: {
    comment: String.raw`--[^\n]*|\/\*[\s\S]*?(?:\*\/|$)`,
    string: String.raw`'(?:[^']|'')*'?`,
    keywords: words("select from where group by order having limit offset insert into values update set delete create table drop alter index join left right inner outer on as and or not null is in like between distinct union all case when then else end primary key foreign references default SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT OFFSET INSERT INTO VALUES UPDATE SET DELETE CREATE TABLE DROP ALTER INDEX JOIN LEFT RIGHT INNER OUTER ON AS AND OR NOT NULL IS IN LIKE BETWEEN DISTINCT UNION ALL CASE WHEN THEN ELSE END PRIMARY KEY FOREIGN REFERENCES DEFAULT"),
    literals: words("true false TRUE FALSE"),
  },
  json: {
    comment: String.raw`\/\/[^\n]*`,
    string: String.raw`"(?:[^"\\\n]|\\.)*"?`,
    keywords: words(""),
    literals: words("true false null"),
  },
  config: {
    comment: String.raw`#[^\n]*`,
    string: C_STRING,
    extra: String.raw`^[ \t-]*[\w.-]+(?=\s*[:=])|^\[[^\]\n]*\]`,
    keywords: words(""),
    literals: words("true false null yes no on off"),
  },
};

const ALIASES = {
  python: "python", py: "python", python3: "python", ipython: "python",
  js: "js", javascript: "js", ts: "js", typescript: "js", jsx: "js", tsx: "js", mjs: "js",
  c: "c", h: "c", cpp: "c", "c++": "c", cc: "c", hpp: "c", java: "c", kotlin: "c", go: "c",
  rust: "c", rs: "c", swift: "c", cs: "c", csharp: "c", scala: "c", php: "c",
  sh: "shell", bash: "shell", shell: "shell", zsh: "shell", console: "shell", shellscript: "shell",
  sql: "sql", json: "json", jsonl: "json", yaml: "config", yml: "config", toml: "config",
  ini: "config", dockerfile: "shell", makefile: "shell",
};

const compiled = new Map();

function pattern(name) {
  if (!compiled.has(name)) {
    const f = FAMILIES[name];
    const parts = [`(?<comment>${f.comment})`, `(?<string>${f.string})`];
    if (f.extra) parts.push(`(?<extra>${f.extra})`);
    parts.push(`(?<number>${NUMBER})`, `(?<word>${WORD})`);
    compiled.set(name, new RegExp(parts.join("|"), "gm"));
  }
  return compiled.get(name);
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = "tok-" + cls;
  s.textContent = text;
  return s;
}

function markup(code, parent) {
  const re = /(<!--[\s\S]*?(?:-->|$))|(<\/?[A-Za-z][\w:-]*)|("[^"]*"|'[^']*')|(\/?>)/g;
  let last = 0;
  for (const m of code.matchAll(re)) {
    if (m.index > last) parent.append(code.slice(last, m.index));
    parent.append(span(m[1] ? "comment" : m[2] ? "keyword" : m[3] ? "string" : "keyword", m[0]));
    last = m.index + m[0].length;
  }
  parent.append(code.slice(last));
}

// Append `code`, highlighted as `lang`, to `parent` (a <code> element).
export function highlight(code, lang, parent) {
  const key = String(lang || "").toLowerCase();
  if (["html", "xml", "svg", "vue"].includes(key)) return markup(code, parent);
  const family = ALIASES[key];
  if (!family) {
    parent.textContent = code;
    return;
  }
  const f = FAMILIES[family];
  const re = pattern(family);
  re.lastIndex = 0;
  let last = 0;
  for (const m of code.matchAll(re)) {
    if (m[0] === "") continue;
    if (m.index > last) parent.append(code.slice(last, m.index));
    const g = m.groups;
    let cls = null;
    if (g.comment !== undefined) cls = "comment";
    else if (g.string !== undefined) cls = family === "json" && /^\s*:/.test(code.slice(m.index + m[0].length)) ? "attr" : "string";
    else if (g.extra !== undefined) cls = "attr";
    else if (g.number !== undefined) cls = "number";
    else if (f.keywords.has(m[0])) cls = "keyword";
    else if (f.literals.has(m[0])) cls = "literal";
    else if (code[m.index + m[0].length] === "(") cls = "func";
    parent.append(cls ? span(cls, m[0]) : m[0]);
    last = m.index + m[0].length;
  }
  parent.append(code.slice(last));
}
