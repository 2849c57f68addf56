// The playground: stream characters from /v1/generate/stream as Server-Sent Events.
"use strict";

const $ = (id) => document.getElementById(id);
const output = $("output");
const status = $("status");
let source = null;
let started = 0;
let count = 0;

function setRunning(running) {
  $("generate").disabled = running;
  $("stop").disabled = !running;
  $("copy").disabled = running || output.textContent.length === 0;
}

function finish(message) {
  if (source) {
    source.close();
    source = null;
  }
  setRunning(false);
  status.textContent = message;
}

function generate(event) {
  if (event) event.preventDefault();
  if (source) return;
  const params = new URLSearchParams({
    start: $("start").value,
    length: $("length").value,
    temperature: $("temperature").value,
  });
  if ($("top-k").value) params.set("top_k", $("top-k").value);
  if ($("seed").value) params.set("seed", $("seed").value);
  output.textContent = "";
  status.textContent = "Generating…";
  count = 0;
  started = performance.now();
  setRunning(true);
  const url = "/v1/generate/stream?" + params.toString();
  const mine = new EventSource(url);
  let opened = false;
  source = mine;
  mine.addEventListener("start", (e) => {
    opened = true;
    output.textContent = JSON.parse(e.data).text;
  });
  mine.onmessage = (e) => {
    output.textContent += JSON.parse(e.data).text;
    count += 1;
  };
  mine.addEventListener("done", (e) => {
    const reason = JSON.parse(e.data).finish_reason;
    const seconds = (performance.now() - started) / 1000;
    finish(`${count} characters in ${seconds.toFixed(1)} s (${reason}).`);
    document.dispatchEvent(new CustomEvent("charnn:generated", { detail: output.textContent }));
  });
  mine.onerror = async () => {
    if (source !== mine) return;
    mine.close(); // never reconnect: the server would start the whole generation again
    let message = "The connection to the server was lost.";
    if (!opened) {
      // EventSource cannot show an HTTP error's body: ask once with fetch, and read only an error's body.
      // An answer that opens this time is cut at once, so nothing generates for no one.
      const ask = new AbortController();
      const response = await fetch(url, { signal: ask.signal }).catch(() => null);
      if (response && !response.ok) {
        const body = await response.json().catch(() => ({}));
        message = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail || message;
      }
      ask.abort();
    }
    if (source === mine) finish(count ? `Stopped: ${message}` : message); // else Stop or Generate came first
  };
}

function stop() {
  if (source) finish(`Stopped after ${count} characters.`);
}

async function copyText() {
  const text = output.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  status.textContent = "Copied to the clipboard.";
}

async function loadInfo() {
  try {
    const info = await (await fetch("/v1/model")).json();
    const m = info.model;
    const t = info.training || {};
    const val = typeof t.val_loss === "number" ? `, validation ${t.val_loss.toFixed(3)} nats/char` : "";
    $("model-info").textContent = `${m.cell.toUpperCase()} ${m.layers}×${m.hidden}, ` +
      `${info.parameters.toLocaleString()} parameters, ${info.vocab_size} characters` +
      (t.data ? `, trained on ${t.data.split("/").pop()}` : "") + val + ".";
    $("length").max = String(info.limits.max_length);
  } catch {
    $("model-info").textContent = "Could not read the model's description.";
  }
}

// How busy the server is: "12 others generating" (this page's own stream not counted), every few seconds.
async function showBusy() {
  try {
    const stats = await (await fetch("/v1/stats")).json();
    const others = stats.live_streams - (source ? 1 : 0);
    $("busy").textContent = others > 0 ? `${others} other${others === 1 ? "" : "s"} generating` : "";
  } catch {
    $("busy").textContent = "";
  }
}

for (const id of ["temperature", "length"]) {
  const input = $(id);
  input.addEventListener("input", () => { $(id + "-value").textContent = input.value; });
}
$("controls").addEventListener("submit", generate);
$("stop").addEventListener("click", stop);
$("copy").addEventListener("click", copyText);
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(e);
  if (e.key === "Escape") stop();
});
loadInfo();
showBusy();
setInterval(() => { if (!document.hidden) showBusy(); }, 3000);
