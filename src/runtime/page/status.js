// The status page: fetches /api/status (with this page's query: offset,
// limit, q) every 5 seconds and renders it. Every value is set as text,
// never as markup: entry names come from a table anyone may write.
"use strict";

const REFRESH_MS = 5000;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function ago(iso, now) {
  if (!iso) return "-";
  const s = Math.round((Date.parse(now) - Date.parse(iso)) / 1000);
  const abs = Math.abs(s);
  const span = abs < 90 ? abs + "s" : abs < 5400 ? Math.round(abs / 60) + "m"
    : abs < 129600 ? Math.round(abs / 3600) + "h" : Math.round(abs / 86400) + "d";
  return s >= 0 ? span + " ago" : "in " + span;
}

function when(iso, now) {
  const td = el("td");
  if (!iso) { td.textContent = "-"; return td; }
  td.appendChild(el("span", ago(iso, now)));
  td.appendChild(el("div", iso, "muted mono"));
  return td;
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", "none", "muted");
    td.colSpan = document.querySelectorAll("#" + id + " thead th").length;
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function tag(text, cls) {
  const td = el("td");
  td.appendChild(el("span", text, "tag " + (cls || text)));
  return td;
}

function replicas(s) {
  fill("replicas", s.replicas.map(r => row([
    el("td", r.holder, "mono"), tag(r.role), r.epoch ?? "-",
    r.seen_seconds_ago + "s ago", r.version, when(r.started_at, s.now),
  ])));
}

function overdue(s) {
  const box = document.getElementById("overdue");
  const o = s.overdue;
  if (!o || o.count === 0) { box.hidden = true; return; }
  box.hidden = false;
  box.replaceChildren(
    el("b", o.count + (o.count === 1 ? " entry is" : " entries are") + " overdue"),
    el("span", ": a slot due more than its grace ago was neither sent nor recorded missed — " +
      o.entries.join(", ") + (o.count > o.entries.length ? ", …" : "")));
}

// A paused entry is never overdue: its pause says until when, and why.
function state(e) {
  if (!e.paused) return tag(!e.enabled ? "disabled" : e.overdue ? "overdue" : "enabled");
  const td = tag("paused");
  const p = e.paused;
  const until = el("div", (p.until ? "until " + p.until : "until resumed") +
    (p.reason ? ": " + p.reason : ""), "muted pause");
  until.title = "paused since " + p.since + " by " + p.by;
  td.appendChild(until);
  return td;
}

// The last fire, and under it the last `sqsbeat entries run`, if any.
function lastFire(e, now) {
  const td = when(e.last_fire, now);
  const m = e.last_manual_run;
  if (m) {
    const run = el("div", "manual run " + ago(m.at, now) + " by " + m.by + " (" + m.outcome + ")", "muted manual");
    run.title = m.at + ", task " + m.task_id;
    td.appendChild(run);
  }
  return td;
}

function link(text, params) {
  const a = el("a", text);
  a.href = "/?" + new URLSearchParams(params).toString();
  return a;
}

function entries(s) {
  const page = s.entries;
  const first = page.items.length ? page.offset + 1 : 0;
  document.getElementById("entries-count").textContent =
    first + "–" + (page.offset + page.items.length) + " of " + page.total +
    (page.search ? " matching “" + page.search + "”" : "");
  const base = { limit: page.limit };
  if (page.search) base.q = page.search;
  const pager = document.getElementById("pager");
  pager.replaceChildren();
  if (page.offset > 0) pager.appendChild(link("‹ previous", { ...base, offset: Math.max(0, page.offset - page.limit) }));
  if (page.offset + page.items.length < page.total) pager.appendChild(link("next ›", { ...base, offset: page.offset + page.limit }));
  fill("entries", page.items.map(e => {
    const tr = row([
      el("td", e.name, "mono"), el("td", e.schedule, "mono wrap"), el("td", e.task, "mono"),
      el("td", e.queue, "mono"), state(e), lastFire(e, s.now), when(e.next_fire, s.now),
    ]);
    if (e.overdue) tr.className = "overdue";
    return tr;
  }));
}

function jobs(s) {
  const p = s.pending_jobs;
  const total = Object.values(p.buckets).reduce((a, b) => a + b, 0);
  document.getElementById("jobs-count").textContent = total + " pending";
  document.getElementById("buckets").replaceChildren(...Object.entries(p.buckets).map(([due, n]) => {
    const b = el("span", null, "bucket");
    b.appendChild(el("b", n));
    b.appendChild(el("span", due === "overdue" || due === "later" ? due : "within " + due, "muted"));
    return b;
  }));
  fill("jobs", p.next.map(j => j.error ? row([el("td", j.error, "bad")]) :
    row([when(j.due_at, s.now), el("td", j.task, "mono"), el("td", j.queue, "mono"), el("td", j.id, "mono"), j.attempts])));
}

function failures(s) {
  fill("failures", s.recent_failures.map(f => row([
    when(f.at, s.now), f.kind, el("td", f.name, "mono"), f.attempts, el("td", f.error, "wrap"),
  ])));
}

function render(s) {
  document.getElementById("served").textContent =
    "served by " + s.served_by.holder + " (" + s.served_by.role + ")";
  document.getElementById("updated").textContent = "as of " + s.now;
  replicas(s); overdue(s); entries(s); jobs(s); failures(s);
}

async function refresh() {
  const err = document.getElementById("error");
  try {
    const r = await fetch("/api/status" + window.location.search, { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    render(body);
    err.hidden = true;
  } catch (e) {
    err.hidden = false;
    err.textContent = "cannot read the status: " + e.message + " (retrying)";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const q = new URLSearchParams(window.location.search).get("q");
  if (q) document.getElementById("q").value = q;
  refresh();
  setInterval(refresh, REFRESH_MS);
});
