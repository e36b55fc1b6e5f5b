// The page at /: asks /info what the model takes, then shows an image drop zone or a form built from the table's
// columns, posts to /predict and draws the answer. Plain DOM, nothing fetched from elsewhere; text is always set
// with textContent, so class names and file names (Chinese included) show as they are and are never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function start() {
  let info;
  try {
    info = await (await fetch("info")).json();
  } catch (e) {
    setStatus(`cannot reach the server: ${e}`, true);
    return;
  }
  $("model").textContent = info.model;
  document.title = `${info.model} · dlkit serve`;
  const metric = info.metrics && info.metrics.best_metrics
    ? Object.entries(info.metrics.best_metrics).filter(([k]) => k !== "val_loss")
        .map(([k, v]) => `${k} ${Number(v).toFixed(3)}`).join(", ")
    : "";
  $("about").textContent = [`${info.modality} model`, info.task, info.classes.length ? `${info.classes.length} classes` : "",
    `${info.backend} backend`, metric].filter(Boolean).join(" · ");
  (info.modality === "table" ? tableUI : imageUI)(info);
  document.body.dataset.state = "ready";
}

// ---- images ----

function imageUI(info) {
  $("image-ui").hidden = false;
  $("explain-toggle").hidden = info.backend !== "torch";  // an ONNX graph has no layers to look into
  const drop = $("drop");
  $("file").addEventListener("change", (e) => predictFiles([...e.target.files], info));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    predictFiles([...e.dataTransfer.files], info);
  });
}

async function predictFiles(files, info) {
  if (!files.length) return;
  const form = new FormData();
  files.forEach((f) => form.append("file", f, f.name));
  document.body.dataset.state = "predicting";
  setStatus(`predicting ${files.length} image(s)…`);
  let response, data;
  try {
    const explain = $("explain").checked ? "&explain=1" : "";
    response = await fetch(`predict?topk=${Math.min(info.settings.topk, info.classes.length)}${explain}`,
                           { method: "POST", body: form });
    data = await response.json();
  } catch (e) {
    return fail(`request failed: ${e}`);
  }
  if (!response.ok) return fail(data.error || `HTTP ${response.status}`);
  const results = $("results");
  results.replaceChildren(...data.results.map((r, i) => card(r, files[i])));
  setStatus("");
  document.body.dataset.state = "done";
}

function fail(message) {
  setStatus(message, true);
  document.body.dataset.state = "error";
}

function card(result, file) {
  const preview = el("img", { src: URL.createObjectURL(file), alt: result.file });
  const top = result.predictions[0];
  const bars = el("div", { className: "bars" }, el("h2", { className: "top-class", textContent: top.class }),
    ...result.predictions.map(bar));
  const pictures = [preview];
  if (result.explanation) {  // a PNG data URL: the photo at the model's size, red where the network looked most
    pictures.push(el("img", { src: result.explanation, className: "looked", alt: `where it looked: ${result.file}`,
                              title: `where it looked for ${top.class} (Grad-CAM at ${result.explanation_layer})` }));
  }
  const node = el("div", { className: "card result" }, ...pictures, bars);
  node.dataset.file = result.file;
  node.dataset.topClass = top.class;
  return node;
}

function bar(p) {
  const pct = (100 * p.probability).toFixed(1);
  const fill = el("div", { className: "fill" });
  fill.style.width = `${pct}%`;
  return el("div", { className: "bar" }, el("span", { className: "name", textContent: p.class }),
    el("div", { className: "track" }, fill), el("span", { className: "pct", textContent: `${pct}%` }));
}

// ---- tables ----

function tableUI(info) {
  $("table-ui").hidden = false;
  const fields = info.input.columns.map(field);
  $("fields").replaceChildren(...fields.map((f) => f.label));
  $("row-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const row = {};
    fields.forEach((f) => { row[f.name] = f.value(); });
    await predictRow(row, info);
  });
}

function field(column) {
  let input, value;
  if (column.kind === "boolean") {
    input = el("select", {}, el("option", { value: "", textContent: "(missing)" }),
      el("option", { value: "true", textContent: "true" }), el("option", { value: "false", textContent: "false" }));
    value = () => (input.value === "" ? null : input.value === "true");
  } else if (column.kind === "categorical") {  // a choice of the values seen in training, not free text
    input = el("select", {}, el("option", { value: "", textContent: "(missing)" }),
      ...column.choices.map((c) => el("option", { value: c, textContent: c })));
    value = () => (input.value === "" ? null : input.value);
  } else {
    input = el("input", { type: "number", step: "any" });
    value = () => (input.value === "" ? null : Number(input.value));
  }
  input.name = column.name;
  return { name: column.name, value, label: el("label", { textContent: `${column.name} (${column.kind})` }, input) };
}

async function predictRow(row, info) {
  document.body.dataset.state = "predicting";
  setStatus("predicting…");
  let response, data;
  try {
    response = await fetch("predict", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ rows: [row] }) });
    data = await response.json();
  } catch (e) {
    return fail(`request failed: ${e}`);
  }
  if (!response.ok) return fail(data.error || `HTTP ${response.status}`);
  const first = data.predictions[0];
  const head = el("tr", {}, ...Object.keys(first).map((k) => el("th", { textContent: k })));
  const body = el("tr", {}, ...Object.values(first).map((v) => el("td", { textContent: String(v) })));
  $("table-result").replaceChildren(el("table", { className: "result" }, head, body),
    ...data.notes.map((n) => el("p", { className: "note", textContent: `note: ${n}` })));
  setStatus("");
  document.body.dataset.state = "done";
}

start();
