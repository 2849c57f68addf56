// "Run in my browser": generate in this tab with the exported model (charnn-web.js, onnxruntime-web) instead
// of asking the server. It takes over the form's Generate and Stop while the switch is on; app.js does the rest.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const toggle = $("in-browser");
  let model = null;
  let running = false;
  let stopping = false;

  function addScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.appendChild(script);
    });
  }

  async function loadModel() {
    const state = await (await fetch("/browser/status")).json();
    if (!state.available) throw new Error(state.reason);
    await addScript("/browser/ort.wasm.min.js");
    await addScript("/browser/charnn-web.js");
    return CharnnWeb.load("/browser/", "/browser/");
  }

  toggle.addEventListener("change", async () => {
    if (!toggle.checked || model) return;
    $("status").textContent = "Loading the model into this tab…";
    try {
      model = await loadModel();
      $("status").textContent = "The model runs in this tab now.";
    } catch (e) {
      toggle.checked = false;
      $("status").textContent = `Cannot run in this browser: ${e.message}`;
    }
  });

  async function generate(event) {
    if (!toggle.checked || !model) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (running) return;
    const value = (id) => ($(id).value === "" ? null : Number($(id).value));
    const opts = { start: $("start").value, length: value("length"), temperature: value("temperature"),
                   topK: value("top-k"), seed: value("seed"), greedy: false };
    running = true;
    stopping = false;
    $("generate").disabled = true; $("stop").disabled = false; $("copy").disabled = true;
    $("output").textContent = opts.start || "";
    $("status").textContent = "Generating in this browser…";
    let count = 0;
    const started = performance.now();
    try {
      await model.generate(opts, (c) => { $("output").textContent += c; count++; }, () => stopping);
      const seconds = (performance.now() - started) / 1000;
      $("status").textContent = `${stopping ? "Stopped after" : "Generated"} ${count} characters in this browser ` +
        `in ${seconds.toFixed(1)} s (${Math.round(count / seconds)} chars/s).`;
    } catch (e) {
      $("status").textContent = `Error: ${e.message}`;
    }
    running = false;
    $("generate").disabled = false; $("stop").disabled = true; $("copy").disabled = count === 0;
  }

  $("controls").addEventListener("submit", generate, true);
  $("stop").addEventListener("click", (e) => {
    if (running) { stopping = true; e.stopImmediatePropagation(); }
  }, true);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && running) stopping = true;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(e);
  }, true);
})();
