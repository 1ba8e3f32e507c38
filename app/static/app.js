"use strict";
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
let models = [], file = null, photo = null, box = null, drag = null, result = null, heat = null, sel = 0;
let clip = null;  // a video's analysis: {frames: [{frame, time_s, persons}], summary}
let defaultModel = null;  // GET /models' default_model
const COLORS = { right: "#e63c3c", left: "#3cc85a", centre: "#468cff" };
// One outline colour per person, as /pose/render draws them (none of them the limbs' red, green
// or blue: limbs are coloured by side, the person's right red, left green, centre blue).
const PALETTE = ["#ffc800", "#00c8dc", "#dc3cdc", "#ff8c00", "#f5f5f5", "#9664ff", "#ff78aa", "#aa783c", "#969696", "#c8c864"];

function el(tag, text) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }
function person() { return result && result.persons.length ? result.persons[Math.min(sel, result.persons.length - 1)] : null; }

function limbColor(names, a, b) {
  const s = names[a] + names[b];
  if (s.includes("right") && !s.includes("left")) return COLORS.right;
  if (s.includes("left") && !s.includes("right")) return COLORS.left;
  return COLORS.centre;
}

async function loadModels() {
  const r = await fetch("/models");
  const listed = await r.json();
  models = listed.models;
  for (const m of models) {
    const o = document.createElement("option");
    const acc = m.accuracy ? ` — PCK@0.2 ${m.accuracy["pck@0.2"].toFixed(3)}` : "";
    o.value = m.id; o.textContent = `${m.id} (${m.architecture})${acc}`;
    $("model").appendChild(o);
  }
  const def = models.find((m) => m.id === listed.default_model) || models[0];
  defaultModel = def ? def.id : null;
  if (def) $("model").value = def.id;
  fillJoints();
}

// The heatmap picker lists the chosen model's joints (19 with the COCO face, 14 for LSP-only models).
function fillJoints() {
  const m = models.find((x) => x.id === $("model").value);
  const keep = $("joint").value;
  const none = el("option", "none"); none.value = "-1";
  $("joint").replaceChildren(none, ...(m ? m.keypoints : []).map((n, i) => {
    const o = el("option", n); o.value = String(i); return o;
  }));
  if (m && Number(keep) < m.keypoints.length) $("joint").value = keep;
}

function scale() { return canvas.width / photo.width; }

function setFile(f) {
  if (f.type.startsWith("video/")) setVideo(f); else setPhoto(f);
}

function setPhoto(f) {
  $("clip").hidden = true; $("clip").removeAttribute("src"); canvas.classList.remove("overlay"); clip = null;
  file = f; box = null; result = null; heat = null; sel = 0; $("compare").replaceChildren(); $("kp").replaceChildren();
  const img = new Image();
  img.onload = () => {
    photo = img;
    const s = Math.min(2, 900 / img.width, 640 / img.height);  // small photos are enlarged
    canvas.width = Math.round(img.width * s); canvas.height = Math.round(img.height * s);
    $("run").disabled = false; draw();
  };
  img.src = URL.createObjectURL(f);
}

function currentKeypoints(p) {
  if (p.stages && p.stages.length) {
    const t = Number($("stageSlider").value) - 1;
    return p.stages[Math.min(t, p.stages.length - 1)].keypoints;
  }
  return p.keypoints;
}

function drawSkeleton(m, kps, colour, s) {
  ctx.lineWidth = Math.max(2, canvas.width / 200);
  for (const [a, b] of m.skeleton) {
    ctx.strokeStyle = colour || limbColor(m.keypoints, a, b);
    ctx.beginPath(); ctx.moveTo(kps[a].x * s, kps[a].y * s); ctx.lineTo(kps[b].x * s, kps[b].y * s); ctx.stroke();
  }
  ctx.fillStyle = "#fff";
  for (const k of kps) { ctx.beginPath(); ctx.arc(k.x * s, k.y * s, ctx.lineWidth, 0, 7); ctx.fill(); }
}

function draw() {
  if (!photo) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(photo, 0, 0, canvas.width, canvas.height);
  const s = scale();
  const chosen = person();
  if (heat && chosen && chosen.heatmaps) {  // placed with the response's affine: [x, y] = A @ [col, row, 1]
    const A = chosen.heatmaps.to_image, w = chosen.heatmaps.width, h = chosen.heatmaps.height;
    ctx.save(); ctx.globalAlpha = 0.55; ctx.imageSmoothingEnabled = true;
    ctx.drawImage(heat, (A[0][2] - 0.5 * A[0][0]) * s, (A[1][2] - 0.5 * A[1][1]) * s, w * A[0][0] * s, h * A[1][1] * s);
    ctx.restore();
  }
  if (box) {
    ctx.strokeStyle = "#ffcc00"; ctx.lineWidth = 2; ctx.setLineDash([6, 4]);
    ctx.strokeRect(box.x * s, box.y * s, box.w * s, box.h * s); ctx.setLineDash([]);
  }
  if (!result) return;
  const m = models.find((x) => x.id === result.model);
  result.persons.forEach((p, i) => {
    const colour = PALETTE[i % PALETTE.length], mine = p === chosen;
    ctx.strokeStyle = colour; ctx.lineWidth = mine ? 3 : 1.5;
    ctx.strokeRect(p.bbox[0] * s, p.bbox[1] * s, p.bbox[2] * s, p.bbox[3] * s);
    drawSkeleton(m, currentKeypoints(p), null, s);
    // the label on a backing of the person's colour: readable on any photo
    const label = `${i + 1}${p.score == null ? "" : " " + p.score.toFixed(2)}`;
    ctx.font = "bold 13px system-ui";
    const tw = ctx.measureText(label).width;
    ctx.fillStyle = colour; ctx.fillRect(p.bbox[0] * s, p.bbox[1] * s, tw + 8, 18);
    ctx.fillStyle = "#000"; ctx.fillText(label, p.bbox[0] * s + 4, p.bbox[1] * s + 14);
  });
}

function query(params) {
  if (document.getElementById("flip").checked) params.flip = "true";
  if (box && box.w > 4 && box.h > 4) params.bbox = [box.x, box.y, box.w, box.h].map((v) => v.toFixed(1)).join(",");
  return new URLSearchParams(params).toString();  // every value encoded
}

async function post(url) {
  const body = new FormData(); body.append("image", file);
  const r = await fetch(url, { method: "POST", body });
  const json = await r.json();
  if (!r.ok) throw new Error(`${r.status}: ${JSON.stringify(json.detail)}`);
  return json;
}

function showTable(p) {
  const rows = [["joint", "x", "y", "score"]].concat(p ? p.keypoints.map((k) =>
    [k.in_image === false ? `${k.name} (outside the image)` : k.name, k.x.toFixed(1), k.y.toFixed(1),
     k.score == null ? "–" : k.score.toFixed(3)]) : []);
  $("kp").replaceChildren(...rows.map((cells, i) => {
    const tr = el("tr"); cells.forEach((c) => tr.appendChild(el(i ? "td" : "th", c))); return tr;
  }));
}

function showPersons() {
  const options = result.persons.map((p, i) => {
    const o = el("option", `${i + 1}${p.score == null ? " (your box)" : ` · score ${p.score.toFixed(2)}`}`);
    o.value = String(i); return o;
  });
  $("person").replaceChildren(...(options.length ? options : [el("option", "no person found")]));
  $("person").disabled = options.length < 2; $("person").value = String(sel);
}

async function selectPerson() {
  const p = person();
  const n = p && p.stages ? p.stages.length : 1;
  $("stageSlider").max = n; $("stageSlider").value = n; $("stageSlider").disabled = n < 2;
  $("stageLabel").textContent = `${n} of ${n}`;
  await loadHeat(); showTable(p); draw();
}

async function run() {
  const model = $("model").value;
  $("status").textContent = "running…"; $("compare").replaceChildren();
  try {
    if (!photo && file) { await runVideo(); return; }
    if (model === "__all__") {
      const res = await post(`/pose/compare?${query({ stages: "true" })}`);
      $("compare").replaceChildren();
      for (const r of res.results) {
        result = r; heat = null; sel = 0;
        const n = r.persons.length && r.persons[0].stages ? r.persons[0].stages.length : 1;
        $("stageSlider").max = n; $("stageSlider").value = n; draw();
        const fig = el("figure"), im = new Image();
        im.src = canvas.toDataURL(); im.alt = r.model; im.title = "click to enlarge";
        fig.onclick = () => fig.classList.toggle("enlarged");
        fig.append(im, el("figcaption", `${r.model} · ${r.timing_ms.inference.toFixed(1)} ms`));
        $("compare").appendChild(fig);
      }
      // the main picture keeps the first model's skeletons
      result = res.results[0] || null; sel = 0; if (result) { showPersons(); await selectPerson(); } else draw();
      const found = res.persons_detected == null ? "" : `, ${res.persons_detected} person(s)`;
      $("status").textContent = `compared ${res.results.length} models in ${res.total_ms.toFixed(0)} ms${found}`;
      $("compare").dataset.done = String(res.results.length);
      return;
    }
    result = await post(`/pose?${query({ model, stages: "true", heatmaps: "png" })}`);
    sel = 0; showPersons(); await selectPerson();
    const t = result.timing_ms;
    $("status").textContent = result.persons.length
      ? `${result.model}: ${result.persons.length} person(s), ${t.total.toFixed(1)} ms ` +
        `(detect ${t.detect.toFixed(1)} ms, pose ${t.inference.toFixed(1)} ms)`
      : "no person found in this photo (drag a box to choose one yourself)";
    canvas.dataset.drawn = result.persons.length ? result.model : "none";
  } catch (e) { $("status").textContent = String(e); }
}

async function loadHeat() {
  const j = Number($("joint").value);
  heat = null;
  const p = person();
  if (!p || !p.heatmaps || j < 0) return;
  const img = new Image();
  const maps = p.heatmaps.maps_png[j];
  await new Promise((ok) => { img.onload = ok; img.src = "data:image/png;base64," + maps.png; });
  // Colour the grayscale map (red, alpha by value) on a small offscreen canvas.
  const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
  const g = c.getContext("2d"); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height);
  for (let i = 0; i < d.data.length; i += 4) { const v = d.data[i]; d.data[i] = 255; d.data[i + 1] = 40; d.data[i + 2] = 0; d.data[i + 3] = v; }
  g.putImageData(d, 0, 0); heat = c;
  canvas.dataset.heatmap = maps.name;
}

// Video: the clip plays in its own element; the canvas over it draws the analysed frame
// nearest before the playing time, every tracked person in their own outline colour.
function setVideo(f) {
  file = f; photo = null; box = null; result = null; heat = null; clip = null;
  $("compare").replaceChildren(); $("kp").replaceChildren();
  const v = $("clip");
  v.onloadedmetadata = () => {
    canvas.width = v.videoWidth; canvas.height = v.videoHeight; canvas.classList.add("overlay");
    $("run").disabled = false; drawVideo();
  };
  v.onerror = () => { $("status").textContent = "this browser cannot play the clip; it can still be analysed"; $("run").disabled = false; };
  v.src = URL.createObjectURL(f); v.hidden = false;
}

function frameAt(t) {
  const frames = clip ? clip.frames : [];
  let lo = 0, hi = frames.length - 1, found = null;
  while (lo <= hi) {  // the last analysed frame at or before t
    const mid = (lo + hi) >> 1;
    if (frames[mid].time_s <= t + 1e-3) { found = frames[mid]; lo = mid + 1; } else hi = mid - 1;
  }
  return found;
}

function drawVideo() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const f = frameAt($("clip").currentTime);
  if (!f) return;
  const m = models.find((x) => x.id === clip.summary.model);
  for (const p of f.persons) {
    const colour = PALETTE[(p.track_id - 1) % PALETTE.length];
    ctx.strokeStyle = colour; ctx.lineWidth = 2;
    ctx.strokeRect(p.bbox[0], p.bbox[1], p.bbox[2], p.bbox[3]);
    drawSkeleton(m, p.keypoints, null, 1);
    const label = `#${p.track_id}`;
    ctx.font = "bold 14px system-ui";
    ctx.fillStyle = colour; ctx.fillRect(p.bbox[0], p.bbox[1], ctx.measureText(label).width + 8, 18);
    ctx.fillStyle = "#000"; ctx.fillText(label, p.bbox[0] + 4, p.bbox[1] + 14);
  }
  canvas.dataset.frame = String(f.frame);
}

async function runVideo() {
  const v = $("clip"), chosen = $("model").value;
  const params = { smooth: "true", model: chosen === "__all__" ? defaultModel : chosen };  // one model per clip
  if ($("flip").checked) params.flip = "true";
  const body = new FormData(); body.append("video", file);
  const r = await fetch(`/pose/video?${new URLSearchParams(params)}`, { method: "POST", body });
  if (!r.ok) throw new Error(`${r.status}: ${JSON.stringify((await r.json()).detail)}`);
  const reader = r.body.getReader(), text = new TextDecoder();
  const frames = []; let pending = "", summary = null;
  clip = { frames, summary: { model: params.model } };
  for (;;) {  // JSON lines as they arrive: the skeletons appear while the clip is analysed
    const { done, value } = await reader.read();
    if (done) break;
    pending += text.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      const line = JSON.parse(pending.slice(0, end)); pending = pending.slice(end + 1);
      if (line.summary) summary = line.summary; else frames.push(line);
    }
    $("status").textContent = `analysed ${frames.length} frames…`; drawVideo();
  }
  clip.summary = summary;
  $("status").textContent = `${summary.model}: ${summary.frames} frames at ${summary.fps} fps, ` +
    `${summary.tracks} tracked person(s), ${(summary.timing_ms.total / 1000).toFixed(1)} s` +
    (summary.error ? `; stopped: ${summary.error}` : "");
  canvas.dataset.tracks = String(summary.tracks);
  drawVideo();
}

function tick() { if (clip) drawVideo(); }
$("clip").addEventListener("timeupdate", tick);
$("clip").addEventListener("seeked", tick);
(function follow() {  // redraw with every displayed video frame while it plays
  const v = $("clip");
  if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(() => { tick(); follow(); });
  else requestAnimationFrame(() => { tick(); follow(); });
})();

$("drop").onclick = () => $("file").click();
$("file").onchange = (e) => e.target.files[0] && setFile(e.target.files[0]);
$("drop").ondragover = (e) => { e.preventDefault(); $("drop").classList.add("over"); };
$("drop").ondragleave = () => $("drop").classList.remove("over");
$("drop").ondrop = (e) => { e.preventDefault(); $("drop").classList.remove("over"); if (e.dataTransfer.files[0]) setFile(e.dataTransfer.files[0]); };
$("run").onclick = run;
$("clearbox").onclick = () => { box = null; draw(); };
$("joint").onchange = async () => { await loadHeat(); draw(); };
$("model").addEventListener("change", fillJoints);
$("person").onchange = async () => { sel = Number($("person").value); await selectPerson(); };
$("stageSlider").oninput = () => { $("stageLabel").textContent = `${$("stageSlider").value} of ${$("stageSlider").max}`; draw(); };
// A point under the pointer in image pixels. The canvas may be shown smaller than its
// internal size (CSS max-width on a narrow window), so go through its on-screen rectangle.
function imagePoint(e) {
  const r = canvas.getBoundingClientRect(), s = scale();
  return { x: (e.clientX - r.left) * (canvas.width / r.width) / s, y: (e.clientY - r.top) * (canvas.height / r.height) / s };
}
// Pointer events: mouse, touch and pen alike.
canvas.onpointerdown = (e) => { if (!photo) return; canvas.setPointerCapture(e.pointerId); drag = imagePoint(e); };
canvas.onpointermove = (e) => {
  if (!drag) return; const { x, y } = imagePoint(e);
  box = { x: Math.min(drag.x, x), y: Math.min(drag.y, y), w: Math.abs(x - drag.x), h: Math.abs(y - drag.y) }; draw();
};
canvas.onpointerup = canvas.onpointercancel = () => { drag = null; };
loadModels();
