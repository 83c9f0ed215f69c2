"use strict";
// The try-it page: photo -> POST /v1/tags, drawing pad -> POST /v1/digits (a PNG of the pad).
const $ = (id) => document.getElementById(id);

function percent(p) {
  return (100 * p).toFixed(p >= 0.1 ? 0 : 1) + "%";
}

// One row per entry: name, a bar as wide as the probability, the figure.
function showBars(list, entries) {
  list.replaceChildren(...entries.map(([name, p]) => {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", (100 * p).toFixed(1));
    track.setAttribute("aria-label", name);
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * p).toFixed(2) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    li.append(label, track, value);
    return li;
  }));
}

function timing(t, roundTrip) {
  return `decode ${t.decode.toFixed(1)} ms · preprocess ${t.preprocess.toFixed(1)} ms · ` +
    `inference ${t.inference.toFixed(1)} ms · round trip ${roundTrip.toFixed(0)} ms`;
}

async function post(url, blob) {
  const start = performance.now();
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": blob.type || "application/octet-stream" },
    body: blob,
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return [body, performance.now() - start];
}

// Photo tags.
async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    const body = await response.json();
    for (const m of body.models.filter((m) => m.task === "imagenet-tags")) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.name + (m.weights === "official" ? "" : " (stand-in weights)");
      $("model").append(option);
    }
  } catch (e) {
    $("photo-status").textContent = "Could not list the models: " + e.message;
  }
}

let lastPhoto = null;

async function tagPhoto(file) {
  if (!file) return;
  lastPhoto = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = "The chosen photo: " + file.name;
  preview.hidden = false;
  const params = new URLSearchParams({ decode: $("decode").value });
  if ($("model").value) params.set("model", $("model").value);
  $("photo-status").textContent = "Tagging " + file.name + "…";
  try {
    const [answer, roundTrip] = await post("/v1/tags?" + params, file);
    $("photo-status").textContent = `${answer.model}, ${answer.image.format} ` +
      `${answer.image.width}×${answer.image.height}, decode ${$("decode").value}`;
    showBars($("tags"), answer.tags.map((t) => [t.label, t.confidence]));
    $("photo-timing").textContent = timing(answer.timing_ms, roundTrip);
    $("photo-warning").hidden = !answer.warning;
    $("photo-warning").textContent = answer.warning || "";
  } catch (e) {
    $("photo-status").textContent = "Error: " + e.message;
    $("tags").replaceChildren();
    $("photo-timing").textContent = "";
  }
}

$("photo-input").addEventListener("change", (e) => tagPhoto(e.target.files[0]));
for (const id of ["model", "decode"]) {
  $(id).addEventListener("change", () => tagPhoto(lastPhoto));
}
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  tagPhoto(e.dataTransfer.files[0]);
});

// The drawing pad: black ink on white, read when the stroke ends.
const pad = $("pad");
const ink = pad.getContext("2d");
let drawing = false;
let drawn = false;

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  drawn = false;
  $("digit-value").textContent = "";
  $("digit-bars").replaceChildren();
  $("digit-timing").textContent = "";
  $("digit-status").textContent = "";
}

function point(e) {
  const box = pad.getBoundingClientRect();
  return [(e.clientX - box.left) * pad.width / box.width, (e.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (e) => {
  drawing = true;
  pad.setPointerCapture(e.pointerId);
  ink.strokeStyle = "#000";
  ink.lineWidth = 22;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(...point(e));
  ink.lineTo(...point(e));
  ink.stroke();
  drawn = true;
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  ink.lineTo(...point(e));
  ink.stroke();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    readPad();
  });
}

async function readDigit(blob) {
  $("digit-status").textContent = "Reading…";
  try {
    const [answer, roundTrip] = await post("/v1/digits", blob);
    $("digit-value").textContent = String(answer.digit);
    $("digit-status").textContent = `${percent(answer.confidence)} sure`;
    showBars($("digit-bars"), answer.probabilities.map((p, d) => [String(d), p]));
    $("digit-timing").textContent = timing(answer.timing_ms, roundTrip);
  } catch (e) {
    $("digit-status").textContent = "Error: " + e.message;
  }
}

function readPad() {
  if (!drawn) {
    $("digit-status").textContent = "Draw a digit first.";
    return;
  }
  pad.toBlob((blob) => readDigit(blob), "image/png");
}

$("clear").addEventListener("click", clearPad);
$("read").addEventListener("click", readPad);
$("digit-input").addEventListener("change", (e) => {
  if (e.target.files[0]) readDigit(e.target.files[0]);
});

clearPad();
loadModels();
