// fakefinder's page: upload, follow the job, draw the verdict. It uses the same JSON API as programs do.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#3949ab"];
const colour = (track) => COLOURS[track % COLOURS.length];
let current = null; // {id, result, view}

function say(text, error = false) {
  const m = $("message");
  m.textContent = text;
  m.className = error ? "error" : "";
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  return { status: response.status, body, location: response.headers.get("Location") };
}

async function loadModels() {
  const { status, body } = await api("/api/models");
  if (status !== 200) { say(body && body.error ? body.error : "cannot list the models", true); return; }
  const select = $("model");
  for (const m of body) {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} (${m.backbone})`;
    select.appendChild(option);
  }
  const note = () => {
    const m = body.find((x) => x.name === select.value);
    $("model-evidence").textContent = m ? `${m.evidence_summary}.` : "";
    const rule = m && m.headline === "likelihood ratio" ? "Its threshold's decisions" : "Its verdicts";
    $("model-note").textContent = m ? `${rule}: ${m.meaning}.` : "";
    $("model-strength").textContent = m ? `Strength of evidence: ${m.strength_summary}` : "";
  };
  select.addEventListener("change", note);
  note();
}

async function upload(file) {
  if (!file) return;
  say(`uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)`);
  const form = new FormData();
  form.append("file", file);
  form.append("model", $("model").value);
  const { status, body } = await api("/api/predict", { method: "POST", body: form });
  if (status >= 400) { say(body && body.error ? body.error : `upload refused (${status})`, true); return; }
  say("");
  const id = body.id || null;
  if (id) { location.hash = `job=${id}`; follow(id); }
}

async function follow(id) {
  $("verdict").hidden = true;
  $("job").hidden = false;
  for (;;) {
    const { status, body } = await api(`/api/jobs/${id}/status`);
    if (status !== 200) { say(body && body.error ? body.error : "no such job", true); $("job").hidden = true; return; }
    $("job-name").textContent = body.name;
    const text = body.state === "queued" ? "waiting for a free worker"
      : `${body.frames} frames sampled, ${body.faces} faces found`;
    $("progress").textContent = text;
    $("progress").dataset.state = body.state;
    $("bar-fill").style.width = `${Math.min(95, 5 + body.frames * 8)}%`;
    if (body.state === "failed") { say(body.error, true); $("job").hidden = true; return; }
    if (body.state === "done") break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const [result, view] = await Promise.all([api(`/api/jobs/${id}`), api(`/api/jobs/${id}/view`)]);
  current = { id, result: result.body, view: view.body };
  $("job").hidden = true;
  show();
  followHeatmaps(id);
}

// The verdict is shown as soon as it is in; the heatmaps are computed after it and drawn when they are ready.
async function followHeatmaps(id) {
  for (;;) {
    const { status, body } = await api(`/api/jobs/${id}/status`);
    if (status !== 200 || !current || current.id !== id) return;
    if (body.heatmaps !== "pending") {
      const view = await api(`/api/jobs/${id}/view`);
      if (!current || current.id !== id) return;
      current.view = view.body;
      drawHeatmaps(id, current.view, body.heatmaps);
      return;
    }
    drawHeatmaps(id, current.view, "pending");
    await new Promise((r) => setTimeout(r, 250));
  }
}

function show() {
  const { id, result, view } = current;
  $("verdict").hidden = false;
  const word = result.verdict || "NO FACE";
  const strength = result.strength;
  // The page leads with the strength of evidence, in words; its colour follows the scale (red or green only from
  // moderate support), so that weak evidence never looks like a finding.
  $("strength").textContent = strength ? strength.sentence
    : result.p_fake === null ? "" : `${result.strength_note[0].toUpperCase()}${result.strength_note.slice(1)}.`;
  $("strength").className = `lead ${strength ? strength.colour : ""}`;
  $("strength").hidden = !$("strength").textContent;
  const tone = strength ? strength.colour : word;
  $("pfake").textContent = result.p_fake === null ? "–" : `${Math.round(result.p_fake * 100)}%`;
  $("pfake").className = `big ${tone}`;
  $("verdict-word").textContent = word === "NO FACE" ? "no face found" : `${word}`;
  $("verdict-word").className = `word ${tone}`;
  $("meaning").textContent = `P(fake) ${result.p_fake === null ? "–" : result.p_fake.toFixed(3)}; ${view.meaning}`;
  $("strength-summary").textContent = view.strength ? `Strength of evidence: ${view.strength}` : "";
  const t = result.threshold.toFixed(3);
  const c = result.conclusive_lr;
  $("plain").textContent = result.p_fake === null ? "No face was found in the sampled frames, so there is no verdict."
    : strength
      ? `The headline says FAKE or REAL only where such scores are at least ${c} times as common one way as the ` +
        `other (likelihood ratio ≥ ${c} or ≤ 1/${c}). At its threshold (${t}) the model's yes/no decision is ` +
        `${result.decision}.`
    : result.verdict === "INCONCLUSIVE"
      ? `The score is within ${result.inconclusive_band.toFixed(2)} of the threshold (${t}): too close to call.`
      : result.verdict === "FAKE"
        ? `The model scores this above its threshold (${t}): treat it as a likely fake.`
        : `The model scores this below its threshold (${t}): no sign of a fake it knows.`;
  $("evidence").textContent = view.evidence ? `${view.evidence}.` : "";
  drawTimeline(result, view);
  drawTracks(result);
  drawHeatmaps(id, view, "pending");
  $("download-json").href = `/api/jobs/${id}/result.json`;
  $("download-report").href = `/api/jobs/${id}/report.html`;
}

function drawTimeline(result, view) {
  const svg = $("timeline");
  svg.replaceChildren();
  const W = 640, H = 200, L = 40, R = 12, T = 12, B = 28;
  const frames = result.frames;
  const tmax = Math.max(1e-6, ...frames.map((f) => f.t));
  const x = (t) => L + (frames.length > 1 ? (t / tmax) * (W - L - R) : (W - L - R) / 2);
  const y = (p) => T + (1 - p) * (H - T - B);
  const el = (name, attrs, parent = svg) => {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    parent.appendChild(e);
    return e;
  };
  for (const p of [0, 0.5, 1]) {
    el("line", { x1: L, x2: W - R, y1: y(p), y2: y(p), stroke: "#eee" });
    el("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end", "font-size": 11, fill: "#777" }).textContent = p;
  }
  el("line", { x1: L, x2: W - R, y1: y(result.threshold), y2: y(result.threshold), stroke: "#c62828",
               "stroke-dasharray": "5 4" });
  // At the left, where the first point rarely sits; the video's threshold: frames are not judged one by one.
  el("text", { x: L + 4, y: y(result.threshold) - 4, "font-size": 11, fill: "#c62828" })
    .textContent = `video threshold ${result.threshold.toFixed(2)}`;
  for (const s of frames.length > 1 ? [0, tmax / 2, tmax] : []) {
    el("text", { x: x(s), y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#777" })
      .textContent = `${s.toFixed(s < 10 ? 1 : 0)} s`;
  }
  const scored = frames.filter((f) => f.p_fake !== null);
  if (scored.length > 1) {
    el("polyline", { points: scored.map((f) => `${x(f.t)},${y(f.p_fake)}`).join(" "), fill: "none",
                     stroke: "#90a4ae", "stroke-width": 1.5 });
  }
  frames.forEach((f, i) => {
    // One colour for every scored frame (the verdict is the video's); a frame without a face sits on the axis.
    const dot = f.p_fake === null
      ? el("rect", { class: "point noface", x: x(f.t) - 3, y: H - B + 2, width: 6, height: 10, fill: "#bbb" })
      : el("circle", { class: "point", cx: x(f.t), cy: y(f.p_fake), r: 6, fill: "#546e7a" });
    dot.dataset.index = f.index;
    dot.dataset.position = i;
    const title = el("title", {}, dot);
    title.textContent = `t=${f.t.toFixed(1)} s, ` +
      (f.p_fake === null ? "no face" : `${f.faces.length} face(s), P(fake) ${f.p_fake.toFixed(3)}`);
    dot.addEventListener("mouseenter", () => showFrame(i));
    dot.addEventListener("click", () => showFrame(i));
  });
  if (frames.length) showFrame(frames.reduce((best, f, i) => (f.p_fake ?? -1) > (frames[best].p_fake ?? -1) ? i : best, 0));
}

function showFrame(position) {
  const { id, result, view } = current;
  const f = result.frames[position];
  for (const dot of document.querySelectorAll("#timeline .point")) {
    dot.classList.toggle("active", Number(dot.dataset.position) === position);
  }
  const size = view.thumbnails[String(f.index)];
  const img = $("thumb");
  img.src = `/api/jobs/${id}/frames/${f.index}.jpg`;
  img.dataset.index = f.index;
  const boxes = $("boxes");
  boxes.replaceChildren();
  if (size) {
    const [tw, th, sw, sh] = size;
    boxes.setAttribute("viewBox", `0 0 ${tw} ${th}`);
    const k = tw / sw;
    for (const face of f.faces) {
      const [bx, by, bw, bh] = face.box;
      const r = document.createElementNS(SVG, "rect");
      Object.entries({ x: bx * k, y: by * k, width: bw * k, height: bh * k, fill: "none",
                       stroke: colour(face.track), "stroke-width": 2.5, class: "face-box" })
        .forEach(([a, v]) => r.setAttribute(a, v));
      boxes.appendChild(r);
      const label = document.createElementNS(SVG, "text");
      Object.entries({ x: bx * k + 2, y: Math.max(10, by * k - 3), "font-size": 12, fill: colour(face.track),
                       "font-weight": "bold", stroke: "#000", "stroke-width": 3, "paint-order": "stroke" })
        .forEach(([a, v]) => label.setAttribute(a, v));  // a dark outline: readable on light frames too
      label.textContent = `#${face.track} ${face.p_fake.toFixed(2)}`;
      boxes.appendChild(label);
    }
  }
  $("thumb-caption").textContent = `frame ${f.index} at ${f.t.toFixed(2)} s: ${f.faces.length} face(s)`;
}

function drawTracks(result) {
  const body = document.querySelector("#tracks tbody");
  body.replaceChildren();
  const worst = result.tracks.reduce((a, t) => (a === null || t.p_fake > a.p_fake ? t : a), null);
  for (const t of result.tracks) {
    const row = document.createElement("tr");
    row.className = "track";
    row.innerHTML = `<td><span class="swatch"></span> #${t.track}</td><td>${t.faces}</td>` +
      `<td>${t.first_t.toFixed(1)}–${t.last_t.toFixed(1)} s</td><td>` +
      `${t.p_fake.toFixed(3)}</td><td>${t === worst ? "decides the verdict" : ""}</td>`;
    row.querySelector(".swatch").style.background = colour(t.track);
    body.appendChild(row);
  }
}

function drawHeatmaps(id, view, state) {
  const box = $("heatmaps");
  if (box.dataset.state === state && box.dataset.job === id) return;
  box.dataset.state = state;
  box.dataset.job = id;
  box.replaceChildren();
  const notes = { pending: "computing heatmaps…", none: view.heatmaps_note || "no face to explain",
    failed: `no heatmaps: ${view.heatmaps_error || "they could not be made"}` };
  if (notes[state]) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = notes[state];
    box.appendChild(note);
  }
  for (const h of state === "ready" ? view.heatmaps : []) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "heatmap";
    img.alt = `heatmap of track ${h.track} at ${h.t.toFixed(1)} s`;
    img.src = `/api/jobs/${id}/heatmaps/${h.rank}.png`;
    const cap = document.createElement("figcaption");
    cap.textContent = `track #${h.track}, ${h.t.toFixed(1)} s, P(fake) ${h.p_fake.toFixed(2)}`;
    fig.append(img, cap);
    box.appendChild(fig);
  }
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => upload(e.target.files[0]));
  const match = location.hash.match(/job=([0-9a-f]{32})/);
  if (match) follow(match[1]);  // a reload finds its job again
}

loadModels();
wire();
