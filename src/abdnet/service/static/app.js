// The abdnet page: search by a dropped crop, see where and when the person was seen (a
// timeline in SVG), browse, enrol and delete. No build step and no third-party code;
// everything goes through the JSON API of the same server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, query: null, offset: 0, limit: 24, total: 0, urls: [] };

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(method, path, body) {
  const response = await fetch(path, { method, body, headers: authHeaders() });
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    throw new Error((data && data.error) || response.status + " " + response.statusText);
  }
  return data;
}

function say(id, text, isError) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

function isoFromLocal(value) {
  // datetime-local gives the browser's local time without a zone
  return value ? new Date(value).toISOString() : "";
}

function shortTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "no time";
}

// When a crop was seen: its capture time, its frame number in the video, both, or "no time".
function when(item) {
  const parts = [];
  if (item.timestamp) parts.push(shortTime(item.timestamp));
  if (item.frame !== null && item.frame !== undefined) parts.push("frame " + item.frame);
  return parts.length ? parts.join(" · ") : "no time";
}

function baseName(path) {
  return path ? path.split(/[\\/]/).pop() : "";
}

// Crops are fetched with the API key (an <img src> cannot send it) and shown as blob URLs.
async function loadCrop(img, path) {
  try {
    const response = await fetch(path, { headers: authHeaders() });
    if (!response.ok) throw new Error(String(response.status));
    const url = URL.createObjectURL(await response.blob());
    state.urls.push(url);
    img.src = url;
  } catch (e) {
    img.alt = "crop unavailable";
  }
}

function releaseCrops(container) {
  for (const img of container.querySelectorAll("img.crop")) {
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  }
  container.replaceChildren();
}

function line(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div;
}

function card(item, extra) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.id = item.id;
  const img = document.createElement("img");
  img.className = "crop";
  img.alt = "crop " + item.id;
  div.append(img);
  loadCrop(img, item.image);
  for (const el of extra) div.append(el);
  div.append(line("camera " + (item.camera === null ? "?" : item.camera)));
  div.append(line(when(item)));
  if (item.label) div.append(line("label " + item.label));
  if (item.source) {
    const src = line(baseName(item.source));
    src.className = "source";
    src.title = item.source;
    div.append(src);
  }
  return div;
}

async function refreshInfo() {
  try {
    const info = await api("GET", "/info");
    state.info = info;
    const t = info.threshold === null
      ? "no calibrated threshold (start with --threshold)"
      : "same person when distance ≤ " + info.threshold.toFixed(4) + " (FAR " + info.far + ")";
    $("status").textContent = info.gallery_size + " crops · model " +
      info.model.fingerprint.slice(0, 12) + " · " + t;
    $("k").max = info.max_k;
    const writes = info.writes;
    $("enrol-button").disabled = writes === "disabled";
    if (writes === "disabled") say("enrol-message", "enrolment is disabled on this server");
  } catch (e) {
    $("status").textContent = "cannot read the server: " + e.message + " (an API key may be needed)";
  }
}

function setQuery(file) {
  if (!file) return;
  state.query = file;
  const preview = $("query-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").firstChild.textContent = file.name + " — drop another, or ";
  $("search-button").disabled = false;
}

async function search(event) {
  if (event) event.preventDefault();
  if (!state.query) return;
  const params = new URLSearchParams();
  params.set("k", $("k").value || "10");
  if ($("query-camera").value !== "") params.set("camera", $("query-camera").value);
  params.set("exclude_same_camera", $("exclude-camera").checked ? "true" : "false");
  if ($("after").value) params.set("after", isoFromLocal($("after").value));
  if ($("before").value) params.set("before", isoFromLocal($("before").value));
  if ($("search-label").value) params.set("label", $("search-label").value);
  const body = new FormData();
  body.append("image", state.query, state.query.name);
  say("search-message", "searching…");
  $("search-button").disabled = true;
  try {
    const data = await api("POST", "/search?" + params.toString(), body);
    const results = $("results");
    releaseCrops(results);
    for (const r of data.results) {
      const badge = document.createElement("span");
      if (r.match === null) { badge.className = "badge unknown"; badge.textContent = "uncalibrated"; }
      else if (r.match) { badge.className = "badge match"; badge.textContent = "match"; }
      else { badge.className = "badge nomatch"; badge.textContent = "no match"; }
      results.append(card(r, [
        badge,
        line("distance " + r.distance.toFixed(4)),
        line("score " + r.score.toFixed(4)),
      ]));
    }
    const matches = data.results.filter((r) => r.match).length;
    say("search-message", data.results.length + " results" +
      (data.threshold === null ? "" : ", " + matches + " above the threshold") +
      (data.camera === null ? "" : " (query camera " + data.camera + ")"));
    await sightings(params);
  } catch (e) {
    say("search-message", e.message, true);
  } finally {
    $("search-button").disabled = false;
  }
}

// -- where and when: one SVG per identity, one lane per camera, one bar per span ----------

const SVG = "http://www.w3.org/2000/svg";
const TL = { width: 760, label: 90, right: 12, lane: 26, axis: 22 };

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// An identity's axis: capture times when every span has one, else frame numbers, else none.
function axisOf(identity) {
  const spans = identity.cameras.flatMap((c) => c.spans);
  if (spans.every((s) => s.first !== null)) return "time";
  if (spans.every((s) => s.first_frame !== null)) return "frame";
  return null;
}

function spanRange(span, axis) {
  return axis === "time"
    ? [Date.parse(span.first), Date.parse(span.last)]
    : [span.first_frame, span.last_frame];
}

function tickText(value, axis) {
  return axis === "time" ? shortTime(new Date(value).toISOString()) : "frame " + value;
}

function spanText(span) {
  const parts = [];
  if (span.first !== null) parts.push(shortTime(span.first) + " – " + shortTime(span.last));
  if (span.first_frame !== null) parts.push("frames " + span.first_frame + "–" + span.last_frame);
  parts.push(span.sightings + (span.sightings === 1 ? " sighting" : " sightings"));
  return parts.join(" · ");
}

function timeline(identity, axis, range) {
  const lanes = identity.cameras;
  const height = TL.lane * lanes.length + TL.axis;
  const chart = svg("svg", {
    class: "timeline", viewBox: "0 0 " + TL.width + " " + height,
    width: TL.width, height: height, role: "img",
  });
  const [lo, hi] = range;
  const plot = TL.width - TL.label - TL.right;
  const x = (v) => TL.label + (hi > lo ? (v - lo) / (hi - lo) : 0.5) * plot;
  lanes.forEach((cam, i) => {
    const y = i * TL.lane;
    const lane = svg("g", { class: "lane", "data-camera": cam.camera === null ? "" : cam.camera });
    lane.append(svg("text", { class: "lane-name", x: 4, y: y + TL.lane * 0.65 },
      "camera " + (cam.camera === null ? "?" : cam.camera)));
    lane.append(svg("line", { class: "lane-line", x1: TL.label, x2: TL.width - TL.right,
      y1: y + TL.lane / 2, y2: y + TL.lane / 2 }));
    for (const span of cam.spans) {
      if (!axis) continue;
      const [a, b] = spanRange(span, axis);
      const x0 = x(a);
      const bar = svg("rect", { class: "bar", x: x0, y: y + 5, height: TL.lane - 10,
        width: Math.max(3, x(b) - x0), rx: 2 });
      bar.append(svg("title", {}, "camera " + cam.camera + ": " + spanText(span)));
      lane.append(bar);
    }
    chart.append(lane);
  });
  if (axis) {
    const base = TL.lane * lanes.length;
    chart.append(svg("line", { class: "axis", x1: TL.label, x2: TL.width - TL.right, y1: base, y2: base }));
    chart.append(svg("text", { class: "tick", x: TL.label, y: base + 15 }, tickText(lo, axis)));
    if (hi > lo) {
      chart.append(svg("text", { class: "tick end", x: TL.width - TL.right, y: base + 15 },
        tickText(hi, axis)));
    }
  }
  return chart;
}

function renderSightings(data) {
  const box = $("timeline");
  box.replaceChildren();
  // identities on the same axis share its scale, so that their bars can be compared
  const ranges = {};
  for (const identity of data.identities) {
    const axis = axisOf(identity);
    identity.axis = axis;
    if (!axis) continue;
    for (const span of identity.cameras.flatMap((c) => c.spans)) {
      const [a, b] = spanRange(span, axis);
      const r = ranges[axis] || [a, b];
      ranges[axis] = [Math.min(r[0], a), Math.max(r[1], b)];
    }
  }
  for (const identity of data.identities) {
    const div = document.createElement("div");
    div.className = "identity";
    div.dataset.label = identity.label === null ? "" : identity.label;
    const head = document.createElement("div");
    head.className = "identity-head";
    const name = document.createElement("strong");
    name.textContent = identity.label === null
      ? "unlabelled entry " + identity.hits[0].id : identity.label;
    const badge = document.createElement("span");
    if (identity.match === null) { badge.className = "badge unknown"; badge.textContent = "uncalibrated"; }
    else if (identity.match) { badge.className = "badge match"; badge.textContent = "match"; }
    else { badge.className = "badge nomatch"; badge.textContent = "no match"; }
    const facts = document.createElement("span");
    facts.className = "muted";
    facts.textContent = "distance " + identity.distance.toFixed(4) + " · " +
      identity.sightings + " sightings in " + identity.cameras.length + " camera(s)" +
      (identity.complete ? "" : " (more than could be read)");
    head.append(name, badge, facts);
    div.append(head, timeline(identity, identity.axis, ranges[identity.axis] || [0, 0]));
    const list = document.createElement("ul");
    list.className = "spans";
    for (const cam of identity.cameras) {
      for (const span of cam.spans) {
        const li = document.createElement("li");
        li.textContent = "camera " + (cam.camera === null ? "?" : cam.camera) + ": " + spanText(span);
        list.append(li);
      }
    }
    div.append(list);
    box.append(div);
  }
}

async function sightings(params) {
  const query = new URLSearchParams(params);
  if ($("gap-on").checked && $("gap").value) query.set("gap", $("gap").value);
  const body = new FormData();
  body.append("image", state.query, state.query.name);
  say("timeline-message", "looking up sightings…");
  try {
    const data = await api("POST", "/search/sightings?" + query.toString(), body);
    renderSightings(data);
    say("timeline-message", data.identities.length + " identities among the results");
  } catch (e) {
    $("timeline").replaceChildren();
    say("timeline-message", e.message, true);
  }
}

async function browse(event) {
  if (event) { event.preventDefault(); state.offset = 0; }
  const params = new URLSearchParams({ offset: state.offset, limit: state.limit });
  if ($("browse-camera").value !== "") params.set("camera", $("browse-camera").value);
  if ($("browse-label").value) params.set("label", $("browse-label").value);
  try {
    const data = await api("GET", "/gallery?" + params.toString());
    state.total = data.total;
    const gallery = $("gallery");
    releaseCrops(gallery);
    for (const item of data.items) {
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "delete";
      del.addEventListener("click", () => remove(item.id));
      gallery.append(card(item, [line(item.id), del]));
    }
    const pages = Math.max(1, Math.ceil(data.total / state.limit));
    $("page-info").textContent = "page " + (Math.floor(state.offset / state.limit) + 1) +
      " of " + pages + " (" + data.total + ")";
    $("prev-page").disabled = state.offset === 0;
    $("next-page").disabled = state.offset + state.limit >= data.total;
    say("browse-message", "");
  } catch (e) {
    say("browse-message", e.message, true);
  }
}

async function remove(id) {
  if (!window.confirm("Delete " + id + " and its crop?")) return;
  try {
    await api("DELETE", "/gallery/" + encodeURIComponent(id));
    say("browse-message", "deleted " + id);
    await Promise.all([browse(), refreshInfo()]);
  } catch (e) {
    say("browse-message", e.message, true);
  }
}

async function enrol(event) {
  event.preventDefault();
  const files = $("enrol-files").files;
  if (!files.length) { say("enrol-message", "pick one or more images", true); return; }
  const body = new FormData();
  for (const f of files) body.append("image", f, f.name);
  if ($("enrol-camera").value !== "") body.append("camera", $("enrol-camera").value);
  if ($("enrol-time").value) body.append("timestamp", isoFromLocal($("enrol-time").value));
  if ($("enrol-label").value) body.append("label", $("enrol-label").value);
  say("enrol-message", "enrolling " + files.length + " image(s)…");
  try {
    const data = await api("POST", "/gallery", body);
    const created = data.created.filter(Boolean).length;
    say("enrol-message", "enrolled " + created + " new, " + (data.ids.length - created) +
      " already in the gallery");
    $("enrol-files").value = "";
    await Promise.all([browse(), refreshInfo()]);
  } catch (e) {
    say("enrol-message", e.message, true);
  }
}

function setup() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    setQuery(e.dataTransfer.files[0]);
  });
  $("query-file").addEventListener("change", (e) => setQuery(e.target.files[0]));
  $("search-form").addEventListener("submit", search);
  $("browse-form").addEventListener("submit", browse);
  $("prev-page").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit);
    browse();
  });
  $("next-page").addEventListener("click", () => { state.offset += state.limit; browse(); });
  $("enrol-form").addEventListener("submit", enrol);
  $("api-key").addEventListener("change", () => { refreshInfo(); browse(); });
  refreshInfo();
  browse();
}

document.addEventListener("DOMContentLoaded", setup);
