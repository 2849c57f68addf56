// The look-inside view: each char coloured by the model's surprisal, its top guesses on hover, the chosen
// units' activations as colour strips under each line, and the unit finder's table. Used by the page that
// `charnn inspect` writes and by the serve page's "look inside" tab.
"use strict";

const charnnInspect = (() => {
  const MAX_NATS = 6; // surprisal shown at full colour

  function surprisalColour(nats) {
    if (nats === null) return "transparent";
    const t = Math.min(nats / MAX_NATS, 1);
    return `hsl(${Math.round(60 - 60 * t)}, 95%, ${Math.round(97 - 42 * t)}%)`;
  }

  function unitColour(v) {
    const t = Math.max(-1, Math.min(1, v));
    const [r, g, b] = t >= 0 ? [255, 255 - 200 * t, 255 - 200 * t] : [255 + 200 * t, 255 + 120 * t, 255];
    return [Math.round(r), Math.round(g), Math.round(b)];
  }

  function shown(c) {
    return c === "\n" ? "↵" : c === " " ? "␣" : c;
  }

  function tipText(data, chars, i) {
    const s = data.surprisal[i];
    const head = `${JSON.stringify(chars[i])}: ${s === null ? "nothing before it" : s.toFixed(3) + " nats"}`;
    const guesses = data.guesses[i].map(([c, p]) => `${shown(c)} ${(100 * p).toFixed(1)}%`);
    return [head, ...guesses].join("\n");
  }

  function strip(values, from, to) {
    const canvas = document.createElement("canvas");
    canvas.className = "unit-strip";
    canvas.width = Math.max(to - from, 1);
    canvas.height = 1;
    canvas.style.width = `${to - from}ch`;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(canvas.width, 1);
    for (let i = from; i < to; i++) {
      const [r, g, b] = unitColour(values[i]);
      img.data.set([r, g, b, 255], 4 * (i - from));
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }

  function unitsShown(data) {
    return data.layers.flatMap((layer) => layer.units.map((u) => ({ ...u, layer: layer.layer })));
  }

  function textView(data, chars, tip) {
    const units = unitsShown(data);
    const box = document.createElement("div");
    box.className = "inspect-text";
    let start = 0;
    while (start < chars.length) {
      const nl = chars.indexOf("\n", start);
      const end = nl < 0 ? chars.length : nl + 1;
      const line = document.createElement("div");
      line.className = "inspect-line";
      const spans = document.createElement("div");
      for (let i = start; i < end; i++) {
        const span = document.createElement("span");
        span.className = "ch";
        span.textContent = chars[i] === "\n" ? "↵" : chars[i];
        span.dataset.index = i;
        span.style.background = surprisalColour(data.surprisal[i]);
        spans.appendChild(span);
      }
      line.appendChild(spans);
      for (const u of units) line.appendChild(strip(u.values, start, end));
      box.appendChild(line);
      start = end;
    }
    box.addEventListener("mouseover", (e) => {
      const i = e.target.dataset && e.target.dataset.index;
      if (i === undefined) return;
      tip.textContent = tipText(data, chars, Number(i));
      tip.hidden = false;
      const r = e.target.getBoundingClientRect();
      tip.style.left = `${r.left + window.scrollX}px`;
      tip.style.top = `${r.bottom + window.scrollY + 4}px`;
    });
    box.addEventListener("mouseleave", () => (tip.hidden = true));
    return box;
  }

  function legend(data) {
    const list = document.createElement("ol");
    list.className = "inspect-legend";
    for (const u of unitsShown(data)) {
      const item = document.createElement("li");
      item.textContent = `layer ${u.layer} unit ${u.unit}: ${u.feature} (r = ${u.r.toFixed(2)})`;
      list.appendChild(item);
    }
    return list;
  }

  function finderTable(data) {
    const table = document.createElement("table");
    table.className = "inspect-finder";
    table.innerHTML = "<thead><tr><th>layer</th><th>feature</th><th>best units (r)</th></tr></thead>";
    const body = document.createElement("tbody");
    for (const layer of data.layers) {
      for (const [name, best] of Object.entries(layer.features)) {
        const row = body.insertRow();
        row.insertCell().textContent = layer.layer;
        row.insertCell().textContent = name;
        row.insertCell().textContent = best.map((b) => `${b.unit} (${b.r.toFixed(2)})`).join(", ");
      }
    }
    table.appendChild(body);
    return table;
  }

  function render(el, data) {
    // Python sends one value per code point; a JavaScript string counts UTF-16 units, two for an emoji.
    const chars = Array.from(data.text);
    el.textContent = "";
    const tip = document.createElement("pre");
    tip.className = "inspect-tip";
    tip.id = "inspect-tip";
    tip.hidden = true;
    const summary = document.createElement("p");
    summary.className = "inspect-summary";
    const mean = data.mean_surprisal === null ? "n/a" : data.mean_surprisal.toFixed(3);
    summary.textContent = `${data.model}: ${chars.length} chars, mean surprisal ${mean} nats/char. ` +
      "Colour: surprisal (white: expected, red: surprised); hover a char for the top guesses. " +
      "Under each line, one strip per unit listed below (red: positive, blue: negative).";
    el.append(summary, legend(data), textView(data, chars, tip), finderTable(data), tip);
  }

  return { render, surprisalColour, unitColour };
})();
