// tidescope view: one page, hash routes, every answer a bounded JSON query to this server.
// Everything the trace holds is shown with textContent (never parsed as HTML).
"use strict";

const main = document.getElementById("main");
let summary = null;
let cleanup = null; // the current view's teardown (listeners on window)

// -- small helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(name, params) {
  const qs = new URLSearchParams(params || {}).toString();
  const res = await fetch(`/api/${name}${qs ? "?" + qs : ""}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

// A recorded value as Python would print it, shortened; markers by their meaning.
function fmt(v, depth = 0) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return String(v);
  if (typeof v === "string") return pyStr(v);
  if (depth > 3) return "…";
  if (Array.isArray(v)) return "[" + v.slice(0, 20).map((x) => fmt(x, depth + 1)).join(", ") + (v.length > 20 ? ", …" : "") + "]";
  if ("$truncated" in v) {
    const kept = "kept" in v ? fmt(v.kept, depth + 1) + " " : "";
    return `${kept}<${v.$truncated} cut: ${v.reason}, size ${v.size}>`;
  }
  if ("$object" in v) return v.repr ? String(v.repr) : `<${v.$object}>`;
  if ("$ref" in v) return `<${v.$ref}${v.len !== undefined ? " len " + v.len : ""}>`;
  if ("$redacted" in v) return `<redacted ${v.$redacted}>`;
  if ("$repr" in v) return String(v.$repr);
  if ("$exception" in v) return `<${v.$exception}>`;
  const keys = Object.keys(v);
  if (keys.length === 1 && keys[0].startsWith("$")) return `${keys[0].slice(1)}(${fmt(v[keys[0]], depth + 1)})`;
  return "{" + keys.slice(0, 20).map((k) => `${pyStr(k)}: ${fmt(v[k], depth + 1)}`).join(", ") + (keys.length > 20 ? ", …" : "") + "}";
}

function pyStr(s) {
  const cut = s.length > 200 ? s.slice(0, 200) + "…" : s;
  return "'" + cut.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n") + "'";
}

function dur(ns) {
  if (ns === null || ns === undefined) return "unfinished";
  if (ns < 1e3) return `${ns} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(3)} s`;
}

const fname = (c) => (c.module ? `${c.module}.${c.qualname}` : String(c.qualname));
const callLink = (c, text) => h("a", { href: `#/call/${c.call_id}` }, text || fname(c));
const argsText = (args) =>
  args && typeof args === "object" && !Array.isArray(args) && !Object.keys(args).some((k) => k.startsWith("$"))
    ? Object.entries(args).map(([k, v]) => `${k}=${fmt(v)}`).join(", ")
    : fmt(args);
const outcome = (c) =>
  c.exception_type
    ? h("span", { class: "error" }, `raised ${c.exception_type}${c.exception_message ? ": " + c.exception_message : ""}`)
    : c.exit_reason && c.exit_reason !== "normal" && c.exit_reason !== "return"
      ? c.exit_reason
      : c.end_ns === null ? "unfinished" : `→ ${fmt(c.return_value)}`;

function trackName(t) {
  const thread = `thread ${t.thread}`;
  return t.task ? `${thread} · task ${t.task}` : thread;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

function fail(err) {
  show(h("p", { class: "error", role: "alert" }, `Could not load: ${err.message}`));
}

// -- the loss banner -------------------------------------------------------------------------

function alerts(s) {
  const box = document.getElementById("alerts");
  const notes = [];
  if (s.dropped_events) notes.push(`${s.dropped_events} events were dropped while recording: what is shown is incomplete.`);
  if (s.internal_errors) notes.push(`${s.internal_errors} internal errors while recording.`);
  if (s.damaged_chunks) notes.push(`${s.damaged_chunks} damaged chunk(s) of the trace were skipped.`);
  const open = s.processes.filter((p) => p.complete === false).length;
  if (open) notes.push(`${open} process(es) did not close their trace (killed or still running).`);
  box.replaceChildren(...notes.map((n) => h("div", { class: "alert" }, n)));
  document.getElementById("trace").textContent =
    `${s.directory} · ${s.processes.length} process(es) · ${s.calls} calls · ${s.raised} raised`;
}

// -- timeline --------------------------------------------------------------------------------

const ROW = 16;

async function timeline(params) {
  const s = summary;
  if (s.t0 === null) return show(h("h1", {}, "Timeline"), h("p", {}, "No calls in this trace."));
  let t0 = Number(params.get("t0") ?? s.t0);
  let t1 = Number(params.get("t1") ?? s.t1 + 1);
  const canvas = h("canvas", { tabindex: 0, role: "img", "aria-label": "Timeline of calls; + and - zoom, arrows pan" });
  const labels = h("div", { class: "labels" });
  const range = h("span", { class: "muted" });
  const listing = h("tbody");
  const zoom = (f, at = 0.5) => {
    const span = Math.max(1000, (t1 - t0) * f), c = t0 + (t1 - t0) * at;
    t0 = Math.max(s.t0, Math.round(c - span * at)); t1 = Math.min(s.t1 + 1, Math.round(t0 + span));
    refresh();
  };
  const pan = (f) => {
    const d = Math.round((t1 - t0) * f);
    t0 += d; t1 += d; refresh();
  };
  show(
    h("h1", {}, "Timeline"),
    h("div", { class: "toolbar" },
      h("button", { onclick: () => zoom(0.5) }, "Zoom in (+)"),
      h("button", { onclick: () => zoom(2) }, "Zoom out (−)"),
      h("button", { onclick: () => pan(-0.25) }, "← Earlier"),
      h("button", { onclick: () => pan(0.25) }, "Later →"),
      h("button", { onclick: () => { t0 = s.t0; t1 = s.t1 + 1; refresh(); } }, "Whole trace (0)"),
      range),
    h("div", { class: "timeline" }, labels, h("div", { class: "lanes" }, canvas)),
    h("h2", {}, "Longest calls in view"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "call"), h("th", {}, "track"), h("th", {}, "duration"), h("th", {}, "outcome"))), listing),
  );
  let layout = []; // [{track, y, rows}] for hit tests
  let drawn = [];
  let seq = 0;
  async function refresh() {
    history.replaceState(null, "", `#/timeline?t0=${t0}&t1=${t1}`);
    range.textContent = `${dur(t1 - t0)} shown, from +${dur(t0 - s.t0)}`;
    const width = Math.max(100, canvas.clientWidth || 800);
    const my = ++seq;
    const data = await api("slices", { t0, t1, width });
    if (my !== seq) return;
    draw(data, width);
  }
  function draw(data, width) {
    const key = (r) => `${r.pid}/${r.thread}/${r.task}`;
    const bytrack = new Map(s.tracks.map((t) => [key(t), []]));
    for (const sl of data.slices) bytrack.get(key(sl))?.push(sl);
    layout = [];
    labels.replaceChildren();
    let y = 0, pid = null;
    for (const t of s.tracks) {
      if (t.pid !== pid) {
        pid = t.pid;
        const argv = s.processes.find((p) => p.pid === pid)?.argv;
        const what = Array.isArray(argv) && argv.length ? ` · ${argv.join(" ")}` : "";
        labels.append(h("div", { class: "proc", style: `height:${ROW + 4}px`, title: `process ${pid}${what}` }, `process ${pid}${what}`));
        y += ROW + 4;
      }
      const sl = bytrack.get(key(t)).sort((a, b) => a.start_ns - b.start_ns || b.duration_ns - a.duration_ns);
      const stack = [];
      let rows = 1;
      for (const c of sl) {
        const end = c.end_ns ?? Infinity;
        while (stack.length && stack[stack.length - 1] <= c.start_ns) stack.pop();
        c.depth = stack.length; stack.push(end);
        rows = Math.max(rows, c.depth + 1);
      }
      const height = rows * ROW + 6;
      labels.append(h("div", { class: "track", style: `height:${height}px`, title: trackName(t) }, trackName(t), h("span", { class: "muted" }, ` · ${t.calls} calls`)));
      layout.push({ t, y, height, slices: sl });
      y += height;
    }
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio; canvas.height = Math.max(y, 20) * ratio;
    canvas.style.height = `${Math.max(y, 20)}px`;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.font = "11px system-ui, sans-serif";
    const x = (ns) => ((ns - t0) / (t1 - t0)) * width;
    drawn = [];
    for (const lane of layout) {
      g.fillStyle = "#d8dee4"; g.fillRect(0, lane.y + lane.height - 1, width, 1);
      for (const c of lane.slices) {
        const x0 = Math.max(0, x(c.start_ns)), x1 = Math.min(width, c.end_ns === null ? width : x(c.end_ns));
        const top = lane.y + 3 + c.depth * ROW, w = Math.max(1, x1 - x0);
        g.fillStyle = c.exception_type ? "#e06c5c" : `hsl(${(hash(c.qualname) % 360)}, 45%, 62%)`;
        g.fillRect(x0, top, w, ROW - 2);
        if (w > 30) {
          g.fillStyle = "#111"; g.save(); g.beginPath(); g.rect(x0, top, w, ROW - 2); g.clip();
          g.fillText(c.qualname, x0 + 3, top + ROW - 5); g.restore();
        }
        drawn.push({ c, x0, x1: x0 + w, top, bottom: top + ROW - 2 });
      }
    }
    const bucket = width / Math.max(1, Math.ceil((t1 - t0) / data.min_ns));
    for (const b of data.hidden) {
      const lane = layout.find((l) => l.t.pid === b.pid && l.t.thread === b.thread && l.t.task === b.task);
      if (!lane) continue;
      g.fillStyle = `rgba(90,100,112,${Math.min(1, 0.25 + b.calls / 20)})`;
      g.fillRect(b.bucket * bucket, lane.y + lane.height - 4, Math.max(1, bucket), 3);
    }
    const longest = data.slices.slice(0, 25);
    listing.replaceChildren(...longest.map((c) => h("tr", {},
      h("td", {}, callLink(c)), h("td", {}, `${c.pid} · ${trackName(c)}`), h("td", {}, dur(c.duration_ns)), h("td", {}, c.exception_type ? h("span", { class: "error" }, c.exception_type) : ""))));
  }
  let dragging = null;
  canvas.addEventListener("mousedown", (e) => { dragging = { x: e.clientX, t0, t1, moved: false }; });
  const move = (e) => {
    if (!dragging) return;
    const dx = e.clientX - dragging.x;
    if (Math.abs(dx) > 3) dragging.moved = true;
    const d = Math.round((-dx / canvas.clientWidth) * (dragging.t1 - dragging.t0));
    t0 = dragging.t0 + d; t1 = dragging.t1 + d;
  };
  const up = (e) => {
    if (!dragging) return;
    const moved = dragging.moved;
    dragging = null;
    if (moved) return refresh();
    const r = canvas.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
    const hit = drawn.find((d) => px >= d.x0 && px <= d.x1 && py >= d.top && py <= d.bottom);
    if (hit) location.hash = `#/call/${hit.c.call_id}`;
  };
  window.addEventListener("mousemove", move);
  window.addEventListener("mouseup", up);
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    zoom(e.deltaY < 0 ? 0.8 : 1.25, (e.clientX - r.left) / r.width);
  }, { passive: false });
  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
    const hit = drawn.find((d) => px >= d.x0 && px <= d.x1 && py >= d.top && py <= d.bottom);
    canvas.title = hit ? `${fname(hit.c)} · ${dur(hit.c.duration_ns)}` : "";
  });
  const keys = (e) => {
    if (typing(e)) return;
    if (e.key === "+" || e.key === "=") zoom(0.5);
    else if (e.key === "-") zoom(2);
    else if (e.key === "0") { t0 = s.t0; t1 = s.t1 + 1; refresh(); }
    else if (e.key === "ArrowLeft" && document.activeElement === canvas) pan(-0.25);
    else if (e.key === "ArrowRight" && document.activeElement === canvas) pan(0.25);
    else return;
    e.preventDefault();
  };
  window.addEventListener("keydown", keys);
  cleanup = () => {
    window.removeEventListener("mousemove", move);
    window.removeEventListener("mouseup", up);
    window.removeEventListener("keydown", keys);
  };
  await refresh();
}

function hash(s) {
  let n = 7;
  for (const ch of String(s)) n = (n * 31 + ch.charCodeAt(0)) >>> 0;
  return n;
}

// -- one call --------------------------------------------------------------------------------

// What one recorded event says, as chips for its source line (each names its AST node).
function notes(ev) {
  const chips = chipsOf(ev);
  for (const c of chips) c.title = `${ev.event_type} at ${ev.ast_node_id ?? "?"}`;
  return chips;
}

function chipsOf(ev) {
  const d = ev.data || {};
  switch (ev.event_type) {
    case "local_variable_snapshot":
      return Object.entries(d.variables || {}).map(([k, v]) => h("span", { class: "chip" }, `${k} = ${fmt(v)}`));
    case "loop_iteration": {
      const cur = d.current_value && typeof d.current_value === "object" && !Array.isArray(d.current_value)
        ? Object.entries(d.current_value).map(([k, v]) => `${k} = ${fmt(v)}`).join(", ") : fmt(d.current_value);
      return [h("span", { class: "chip" }, `#${d.iteration_count}: ${cur}`)];
    }
    case "branch_execution":
      return [h("span", { class: `chip ${d.branch_taken ? "taken" : "skipped"}` },
        `${d.branch_type || "branch"} ${d.condition ?? ""} → ${d.branch_taken ? "taken" : "not taken"}`)];
    case "expression_value":
      return [h("span", { class: "chip" }, `${d.expression ?? "value"} = ${fmt(d.value)}`)];
    case "line_execution":
      return [];
    default: {
      const rest = Object.entries(d).filter(([k]) => k !== "line" && k !== "source");
      return [h("span", { class: "chip" }, `${ev.event_type} ${rest.map(([k, v]) => `${k}=${fmt(v)}`).join(" ")}`)];
    }
  }
}

function lineOf(ev) {
  if (ev.data && Number.isInteger(ev.data.line)) return ev.data.line;
  const parts = String(ev.ast_node_id || "").split(":");
  const n = Number(parts[parts.length - 3]);
  return Number.isInteger(n) ? n : null;
}

async function callView(id) {
  const d = await api("call", { id });
  const c = d.call;
  const go = (target) => { if (target) location.hash = `#/call/${target}`; };
  const src = d.source;
  const byLine = new Map();
  for (const ev of d.events) {
    const n = lineOf(ev);
    if (!byLine.has(n)) byLine.set(n, []);
    byLine.get(n).push(ev);
  }
  const lastLine = d.events.length ? lineOf(d.events[d.events.length - 1]) : null;
  let code;
  if (src && typeof src.source === "string") {
    const rows = src.source.split("\n").map((text, i) => {
      const n = src.line + i;
      const evs = byLine.get(n) || [];
      const chips = [];
      if (i === 0 && c.args && typeof c.args === "object" && !Array.isArray(c.args)) {
        for (const [k, v] of Object.entries(c.args)) chips.push(h("span", { class: "chip arg" }, `${k} = ${fmt(v)}`));
      }
      const all = evs.flatMap(notes);
      const limit = 12;
      chips.push(...all.slice(0, limit));
      if (all.length > limit) {
        const rest = all.slice(limit);
        const more = h("button", { class: "chip", onclick: () => { more.replaceWith(...rest); } }, `+${rest.length} more`);
        chips.push(more);
      }
      if (c.exception_type && n === lastLine) chips.push(h("span", { class: "chip exc" }, `then raised ${c.exception_type}`));
      const cls = c.exception_type && n === lastLine ? "raised" : evs.length ? "hit" : null;
      return h("tr", { class: cls, "data-line": n }, h("td", { class: "ln" }, n), h("td", { class: "code" }, text), h("td", { class: "notes" }, chips));
    });
    code = h("table", { class: "source", "aria-label": "source with recorded values" }, h("tbody", {}, rows));
  } else {
    code = h("div", {}, h("p", { class: "muted" }, "No source for this function in the trace; recorded values:"),
      h("ul", {}, d.events.map((ev) => h("li", {}, `line ${lineOf(ev)}: `, notes(ev)))));
  }
  const nav = h("div", { class: "toolbar" },
    h("button", { id: "prev-call", disabled: !d.prev, onclick: () => go(d.prev) }, "← Previous call (p)"),
    h("span", {}, `call ${d.position.n} of ${d.position.of} of ${fname(c)}`),
    h("button", { id: "next-call", disabled: !d.next, onclick: () => go(d.next) }, "Next call (n) →"),
    d.parent ? h("span", {}, "called by ", callLink(d.parent), " (u)") : h("span", { class: "muted" }, "no recorded caller"));
  show(
    h("h1", {}, fname(c)),
    nav,
    h("dl", { class: "meta" },
      h("dt", {}, "where"), h("dd", {}, src ? `${src.file}:${src.line}` : "unknown"),
      h("dt", {}, "process / thread"), h("dd", {}, `${c.pid} · ${trackName(c)}`),
      h("dt", {}, "duration"), h("dd", {}, dur(c.duration_ns)),
      h("dt", {}, "arguments"), h("dd", { class: "val" }, argsText(c.args)),
      h("dt", {}, "outcome"), h("dd", { class: "val", id: "outcome" }, outcome(c))),
    code,
    d.events_truncated ? h("p", { class: "muted" }, `Only the first ${d.events.length} recorded values are shown.`) : null,
    d.children.length ? h("h2", {}, "Calls made") : null,
    d.children.length ? h("ol", {}, d.children.map((k) => h("li", {}, callLink(k), ` · ${dur(k.duration_ns)}`, k.exception_type ? h("span", { class: "error" }, ` · ${k.exception_type}`) : ""))) : null,
  );
  const keys = (e) => {
    if (typing(e)) return;
    if (e.key === "p" || e.key === "[") go(d.prev);
    else if (e.key === "n" || e.key === "]") go(d.next);
    else if (e.key === "u" && d.parent) go(d.parent.call_id);
    else return;
    e.preventDefault();
  };
  window.addEventListener("keydown", keys);
  cleanup = () => window.removeEventListener("keydown", keys);
}

// -- lists -----------------------------------------------------------------------------------

function pager(data, params, route) {
  if (!data.offset && !data.more) return null;
  const at = (o) => { params.set("offset", o); location.hash = `#/${route}?${params}`; };
  return h("div", { class: "toolbar" },
    h("button", { disabled: !data.offset, onclick: () => at(Math.max(0, data.offset - 50)) }, "← Earlier"),
    h("button", { disabled: !data.more, onclick: () => at(data.offset + 50) }, "More →"));
}

async function exceptionsView(params) {
  const data = await api("exceptions", { offset: params.get("offset") || 0 });
  const rows = data.exceptions.map((x) => h("tr", {},
    h("td", { class: "error" }, x.exception_type),
    h("td", { class: "val" }, x.exception_message ?? ""),
    h("td", {}, callLink(x), h("div", { class: "val muted" }, argsText(x.args))),
    h("td", {}, x.place ? `${x.place.file}:${x.place.line}` : "?"),
    h("td", {}, x.chain.length
      ? h("ol", { class: "chain" }, x.chain.map((f) => h("li", {}, callLink(f), h("span", { class: "val muted" }, `(${argsText(f.args)})`))))
      : h("span", { class: "muted" }, "top level"))));
  show(h("h1", {}, "Exceptions"),
    rows.length ? h("table", { id: "exceptions" }, h("thead", {}, h("tr", {}, ["type", "message", "raised in", "place", "called from"].map((t) => h("th", {}, t)))), h("tbody", {}, rows))
      : h("p", {}, "No call ended with an exception."),
    pager(data, params, "exceptions"));
}

async function searchView(params) {
  const kind = params.get("kind") || "function";
  const q = params.get("q") || "";
  const input = h("input", { type: "search", name: "q", value: q, "aria-label": "search text", placeholder: "function name, value or exception type" });
  const select = h("select", { name: "kind", "aria-label": "search by" },
    [["function", "function name"], ["value", "argument or return value"], ["exception", "exception type or message"]]
      .map(([v, t]) => h("option", { value: v, selected: v === kind }, t)));
  const form = h("form", { class: "search", role: "search", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/search?${new URLSearchParams({ kind: select.value, q: input.value })}`;
  } }, select, input, h("button", { type: "submit" }, "Search"));
  show(h("h1", {}, "Search calls"), form, h("div", { id: "results" }));
  input.focus();
  if (!q) return;
  const data = await api("search", { kind, q, offset: params.get("offset") || 0 });
  const rows = data.calls.map((c) => h("tr", {},
    h("td", {}, callLink(c)), h("td", { class: "val" }, argsText(c.args)),
    h("td", { class: "val" }, outcome(c)), h("td", {}, dur(c.duration_ns))));
  document.getElementById("results").replaceChildren(
    rows.length ? h("table", {}, h("thead", {}, h("tr", {}, ["call", "arguments", "outcome", "duration"].map((t) => h("th", {}, t)))), h("tbody", {}, rows))
      : h("p", {}, `No call matches ${pyStr(q)}.`),
    pager(data, params, "search"));
}

function related(e) {
  const d = e.data || {};
  const who = `process ${e.pid}`;
  switch (e.event_type) {
    case "http_request_complete": return `response ${d.status_code ?? "?"} ${d.content_type ?? ""} after ${d.duration_ms ?? "?"} ms (${who})`;
    case "db_query_start": return `query sent: ${d.query ?? ""} ${d.params ? fmt(d.params) : ""} (${who})`;
    case "db_query_complete": return `query ${d.query ?? ""} → ${fmt(d.result)} in ${d.duration_us ?? "?"} µs (${who})`;
    case "remote_call_send": return `outgoing call to ${d.target ?? "?"} (${who})`;
    case "remote_call_receive": return `received from ${d.source ?? "?"} (${who})`;
    case "controller_entry": return `handler ${d.controller ?? ""} ${d.action ?? ""} (${who})`;
    case "controller_exit": return `handler done (${who})`;
    default: return `${e.event_type} ${fmt(d)} (${who})`;
  }
}

async function requestsView(params) {
  const data = await api("requests", { offset: params.get("offset") || 0 });
  const items = data.requests.map((r) => {
    const d = r.data || {};
    const rel = r.related.filter((e) => e.event_type !== "db_query_start");
    return h("section", { class: "req" },
      h("h2", {}, `${d.method ?? "?"} ${d.path ?? ""}`),
      h("div", { class: "muted" }, `process ${r.pid} · correlation ${r.correlation_id ?? "none"}`),
      rel.length ? h("ul", {}, rel.map((e) => h("li", { class: "val" }, related(e), e.call_id ? [" · ", h("a", { href: `#/call/${e.call_id}` }, "call")] : ""))) : h("p", { class: "muted" }, "nothing else recorded under this correlation"));
  });
  show(h("h1", {}, "Requests"), items.length ? items : h("p", {}, "No HTTP request was recorded (the web integrations record them)."), pager(data, params, "requests"));
}

// -- routing and keys ------------------------------------------------------------------------

function typing(e) {
  const t = e.target;
  return e.ctrlKey || e.metaKey || e.altKey || (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA"));
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const [path, query] = (location.hash.slice(1) || "/timeline").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const view = parts[0] || "timeline";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `tidescope · ${view}`;
  try {
    if (!summary) { summary = await api("summary"); alerts(summary); }
    if (view === "call") await callView(parts[1]);
    else if (view === "exceptions") await exceptionsView(params);
    else if (view === "search") await searchView(params);
    else if (view === "requests") await requestsView(params);
    else await timeline(params);
  } catch (err) {
    fail(err);
  }
  // a keyboard user goes on from the new view, not from the link that led there
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
  main.dataset.shown = location.hash; // tests wait for this route to be drawn
  main.dataset.ready = view;
}

window.addEventListener("hashchange", () => { delete main.dataset.ready; route(); });
window.addEventListener("keydown", (e) => {
  if (typing(e)) return;
  const to = { t: "#/timeline", e: "#/exceptions", s: "#/search", "/": "#/search", r: "#/requests" }[e.key];
  if (!to) return;
  e.preventDefault();
  if (location.hash.split("?")[0] === to && to === "#/search") document.querySelector("form.search input")?.focus();
  location.hash = to;
});
route();
