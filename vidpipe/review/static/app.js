// The review page: one clip at a time from the server's queue, four decisions, one key each.
"use strict";

const csrf = document.querySelector('meta[name="csrf"]').content;
const $ = (id) => document.getElementById(id);
const settings = JSON.parse(localStorage.getItem("vidpipe-review") || "{}");
// One id per tab (kept across reloads of that tab): the server leases clips to it.
let tab = sessionStorage.getItem("vidpipe-review-tab");
if (!tab) {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  tab = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  sessionStorage.setItem("vidpipe-review-tab", tab);
}
let current = null;
let filled = false;

function query() {
  return {
    tab, pass: Number($("pass").value), reviewer: $("reviewer").value.trim() || "reviewer",
    video: $("video").value, identity_filter: $("identity").value,
  };
}

function save() {
  const q = query();
  localStorage.setItem("vidpipe-review", JSON.stringify(
    {pass: q.pass, reviewer: q.reviewer, video: q.video, identity: q.identity_filter}));
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body),
  });
  if (response.status === 403) {  // a new token after a restart with another secret: start over
    location.reload();
    throw new Error("reloading");
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// Play only [t0, t1] of a file, again and again. `timeupdate` comes every ~250 ms, long
// enough to show the next shot; a frame callback sees each frame as it is presented and
// goes back before the frame after t1 would be shown. `data-shown-until` records the
// latest frame time presented (the tests check it stays inside the clip).
function bound(video, src, t0, t1) {
  const token = {};
  video.boundToken = token;
  video.dataset.shownUntil = "";
  const again = () => { video.currentTime = t0; video.play().catch(() => {}); };
  video.onloadedmetadata = again;
  video.onpause = () => { if (video.currentTime >= t1 - 0.15) again(); };
  if ("requestVideoFrameCallback" in video) {
    let last = null;
    const onFrame = (now, meta) => {
      if (video.boundToken !== token) return;  // the element shows another clip now
      const t = meta.mediaTime;
      if (t >= t0 - 0.001) video.dataset.shownUntil = Math.max(Number(video.dataset.shownUntil || 0), t);
      const step = last === null || t <= last ? 0.05 : Math.min(0.2, t - last);
      last = t;
      if (t + 1.5 * step >= t1 || t < t0 - 0.5) { last = null; again(); }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    video.ontimeupdate = null;
  } else {
    video.ontimeupdate = () => { if (video.currentTime >= t1 - 0.25 || video.currentTime < t0 - 0.5) again(); };
  }
  video.src = `${src}#t=${t0.toFixed(3)},${t1.toFixed(3)}`;
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function show(clip, remaining) {
  current = clip;
  document.body.dataset.clip = clip ? clip.clip_id : "";
  document.body.dataset.subject = clip ? clip.subject : "";
  $("remaining").textContent = `${remaining} to review`;
  $("crops").replaceChildren();
  $("refs").replaceChildren();
  $("earlier").textContent = "";
  $("people").replaceChildren();
  const video = $("clip");
  if (!clip) {
    video.removeAttribute("src");
    video.load();
    $("proposed").textContent = "—";
    $("score").textContent = "";
    $("clip-info").textContent = "Nothing left in this queue.";
    $("ref-name").textContent = "";
    return;
  }
  bound(video, clip.src, clip.t0, clip.t1);
  $("proposed").textContent = clip.proposed;
  $("score").textContent = clip.score == null ? "" : `score ${clip.score.toFixed(2)} (${clip.source})`;
  $("clip-info").textContent = `${clip.video} · ${clip.start_s.toFixed(2)}–${clip.end_s.toFixed(2)} s · ${clip.clip_id}`;
  $("ref-name").textContent = clip.proposed;
  // A library clip: every person of it, each decided on their own (the one asked now first).
  $("people").replaceChildren(...clip.people.map((p) => {
    const state = p.identity === clip.subject ? "asking now" : p.label === null ? "to review" : `→ ${p.label}`;
    const li = text("li", `${p.identity} (${state})`);
    li.dataset.person = p.identity;
    li.dataset.label = p.label || "";
    return li;
  }));
  for (const src of clip.crops) {
    const img = document.createElement("img");
    img.src = src;
    img.alt = "face";
    $("crops").append(img);
  }
  for (const ref of clip.references) {
    const figure = document.createElement("figure");
    const v = document.createElement("video");
    v.muted = true;
    v.playsInline = true;
    v.className = "reference";
    v.dataset.clip = ref.clip_id;
    bound(v, ref.src, ref.t0, ref.t1);
    figure.append(v, text("figcaption", `${ref.video} · score ${ref.score == null ? "?" : ref.score.toFixed(2)}`));
    $("refs").append(figure);
  }
  if (!clip.references.length) $("refs").append(text("p", "no other clip of this identity"));
  if (clip.earlier.length) {
    $("earlier").textContent = "Earlier reviews: " + clip.earlier.map((e) => `pass ${e.pass}: ${e.label} (${e.reviewer})`).join(" · ");
  }
}

async function refresh() {
  const state = await (await fetch(`/api/state?pass=${$("pass").value}`, {credentials: "same-origin"})).json();
  if (!filled) {
    for (const v of state.videos) $("video").append(new Option(v.name, v.video_id));
    for (const i of state.identities) $("identity").append(new Option(i, i));
    $("names").replaceChildren(...state.names.map((n) => new Option(n)));
    $("video").value = settings.video || "";
    $("identity").value = settings.identity || "";
    filled = true;
  }
  $("recent").replaceChildren(...state.recent.map((d) => {
    const who = d.subject ? ` (${d.subject})` : "";
    const li = text("li", `${d.label === d.proposed ? "✓" : "✗"} ${d.verdict} → ${d.label} · ${d.clip_id}${who} · pass ${d.pass} · ${d.reviewer}`);
    li.dataset.clip = d.clip_id;
    li.dataset.subject = d.subject;
    li.dataset.verdict = d.verdict;
    return li;
  }));
  $("agreement").tBodies[0].replaceChildren(...state.agreement.map((a) => {
    const tr = document.createElement("tr");
    tr.append(text("td", a.identity), text("td", a.clips), text("td", a.rate == null ? "–" : `${(100 * a.rate).toFixed(0)} %`),
              text("td", a.kappa == null ? "–" : a.kappa.toFixed(2)), text("td", a.disputed));
    return tr;
  }));
}

async function next() {
  save();
  const data = await post("/api/next", query());
  show(data.clip, data.remaining);
}

async function decide(verdict, identity) {
  if (!current) return;
  $("message").textContent = "";
  try {
    const data = await post("/api/decide", {...query(), clip_id: current.clip_id, subject: current.subject, verdict, identity});
    show(data.clip, data.remaining);
    $("assign-name").value = "";
    $("assign-name").blur();  // the keys decide the next clip, not type into the name box
    $("message").textContent = `${data.decided.clip_id}: ${data.decided.verdict} → ${data.decided.label}`;
    await refresh();
  } catch (e) {
    $("message").textContent = e.message;
  }
}

function assign() {
  const name = $("assign-name").value.trim();
  if (name) decide("assign", name);
  else $("assign-name").focus();
}

$("accept").onclick = () => decide("accept");
$("reject").onclick = () => decide("reject");
$("noise").onclick = () => decide("noise");
$("assign").onclick = assign;
$("assign-name").addEventListener("keydown", (e) => {
  if (e.key === "Enter") { e.preventDefault(); assign(); }
  if (e.key === "Escape") e.target.blur();
});
for (const id of ["pass", "video", "identity"]) {
  $(id).onchange = async () => { await post("/api/release", {tab}); await refresh(); await next(); };
}
$("reviewer").onchange = next;
document.addEventListener("keydown", (e) => {
  if (e.target.matches("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  const keys = {a: () => decide("accept"), r: () => decide("reject"), n: () => decide("noise"),
                s: () => $("assign-name").focus()};
  const act = keys[e.key.toLowerCase()];
  if (act) { e.preventDefault(); act(); }
});
// A closed tab hands its clip back at once (else its lease lapses after a while).
window.addEventListener("pagehide", () => {
  fetch("/api/release", {method: "POST", keepalive: true, credentials: "same-origin",
                         headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify({tab})});
});
// Keep the lease while the clip is on screen.
setInterval(() => { if (current) post("/api/renew", {...query(), clip_id: current.clip_id, subject: current.subject}).catch(() => {}); }, 30000);

$("pass").value = String(settings.pass || 1);
$("reviewer").value = settings.reviewer || "reviewer";
refresh().then(next).catch((e) => { $("message").textContent = e.message; });
