// charnn in the browser: an exported step graph run by onnxruntime-web (WASM), sampled one char at a time.
// Used by the exported page (index.html) and by `charnn serve`'s "run in my browser" switch.
"use strict";

const CharnnWeb = (() => {
  const here = document.currentScript ? new URL(".", document.currentScript.src).href : "./";

  async function fetchJson(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  // mulberry32: a small seeded generator of uniform numbers in [0, 1).
  function seeded(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  // The WASM backend's runs settle as microtasks: without handing the thread back now and then, the page
  // would neither paint the text as it comes nor see a click on Stop.
  function nextTask() {
    return new Promise((resolve) => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => resolve();
      channel.port2.postMessage(null);
    });
  }

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  // Temperature, then top-k, then the top-p nucleus: the same rules as charnn's sampling.filter_logits.
  function filtered(logits, opts) {
    const scaled = Array.from(logits, (x) => x / opts.temperature);
    const order = scaled.map((_, i) => i).sort((i, j) => scaled[j] - scaled[i]);
    if (opts.topK && opts.topK < scaled.length) {
      const kth = scaled[order[opts.topK - 1]];
      for (let i = 0; i < scaled.length; i++) if (scaled[i] < kth) scaled[i] = -Infinity;
    }
    if (opts.topP && opts.topP < 1) {
      const top = scaled[order[0]];
      const weights = order.map((i) => Math.exp(scaled[i] - top));
      const total = weights.reduce((a, b) => a + b, 0);
      let before = 0;
      order.forEach((i, rank) => {
        if (before >= opts.topP) scaled[i] = -Infinity; // the chars ranked above already reach top_p
        before += weights[rank] / total;
      });
    }
    return scaled;
  }

  function pick(logits, opts, random) {
    if (opts.greedy) return argmax(logits);
    const scaled = filtered(logits, opts);
    const top = Math.max(...scaled);
    const weights = scaled.map((x) => Math.exp(x - top));
    let u = random() * weights.reduce((a, b) => a + b, 0);
    for (let i = 0; i < weights.length; i++) {
      u -= weights[i];
      if (u < 0 && weights[i] > 0) return i;
    }
    return argmax(scaled);
  }

  class Model {
    constructor(session, meta, chars) {
      this.session = session;
      this.meta = meta;
      this.chars = chars;
      this.index = new Map(chars.map((c, i) => [c, i]));
      this.stateNames = Object.keys(meta.inputs).filter((n) => n !== "ids");
    }

    zeroState() {
      const { layers, hidden } = this.meta.model;
      const state = {};
      for (const n of this.stateNames) state[n] = new ort.Tensor("float32", new Float32Array(layers * hidden), [layers, 1, hidden]);
      return state;
    }

    async step(id, state) {
      const feeds = { ids: new ort.Tensor("int64", BigInt64Array.from([BigInt(id)]), [1]), ...state };
      const out = await this.session.run(feeds);
      const next = {};
      for (const n of this.stateNames) next[n] = out[`${n}_out`];
      return { logits: out.logits.data, state: next };
    }

    startIds(start) {
      const text = start || this.meta.default_start;
      const unknown = [...new Set([...text].filter((c) => !this.index.has(c)))];
      if (unknown.length) throw new Error(`the start holds characters the model never saw: ${unknown.map((c) => JSON.stringify(c)).join(" ")}`);
      return [...text].map((c) => this.index.get(c));
    }

    // Calls onChar(char) for each generated char until `length` chars or until shouldStop() is true.
    async generate(opts, onChar, shouldStop = () => false) {
      const ids = this.startIds(opts.start);
      const random = seeded(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
      let state = this.zeroState();
      let logits;
      for (const id of ids) ({ logits, state } = await this.step(id, state));
      let handedBack = performance.now();
      for (let i = 0; i < opts.length && !shouldStop(); i++) {
        if (performance.now() - handedBack > 25) {
          await nextTask();
          handedBack = performance.now();
          if (shouldStop()) break;
        }
        const next = pick(logits, opts, random);
        onChar(this.chars[next]);
        if (i + 1 < opts.length) ({ logits, state } = await this.step(next, state));
      }
    }
  }

  // Loads charnn.json, vocab.json and model.onnx from `base` (a folder URL ending in "/").
  async function load(base = here, ortBase = here) {
    const [meta, vocab] = await Promise.all([fetchJson(base + "charnn.json"), fetchJson(base + "vocab.json")]);
    ort.env.wasm.wasmPaths = ortBase;
    ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page, which a static server rarely gives
    const session = await ort.InferenceSession.create(base + "model.onnx", { executionProviders: ["wasm"] });
    return new Model(session, meta, vocab.chars);
  }

  return { load, pick, seeded };
})();
