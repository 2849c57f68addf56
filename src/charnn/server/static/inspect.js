// The "look inside" tab (POST /v1/inspect, drawn by /inspect/view.js) and the highlighting of copied spans
// in generated text (POST /v1/copying once a generation is done).
"use strict";

(() => {
  const MAX_CHARS = 5000; // the server's limit too (MAX_PAGE_CHARS in server/look.py)
  const COPY_K = 20;
  const el = (tag, props = {}) => Object.assign(document.createElement(tag), props);

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const d = data.detail;
      throw new Error(Array.isArray(d) ? d.map((x) => x.msg).join("; ") : d || `HTTP ${response.status}`);
    }
    return data;
  }

  function buildTab() {
    const section = el("section", { id: "look-inside", hidden: true });
    section.setAttribute("aria-label", "Look inside the model");
    const label = el("label", { htmlFor: "inspect-text", textContent: "Text to look inside" });
    const text = el("textarea", { id: "inspect-text", rows: 4, value: "First Citizen:\nSpeak, speak.\n" });
    const run = el("button", { id: "inspect-run", type: "button", textContent: "Look inside" });
    const status = el("p", { id: "inspect-status", role: "status" });
    const view = el("div", { id: "inspect-view" });
    section.append(label, text, run, status, view);
    run.addEventListener("click", async () => {
      const value = text.value;
      const length = Array.from(value).length; // in chars (code points), as the server counts them
      if (!value) return void (status.textContent = "Type some text first.");
      if (length > MAX_CHARS) {
        status.textContent = `The text holds ${length} chars; at most ${MAX_CHARS} at once here (charnn inspect takes longer texts).`;
        return;
      }
      run.disabled = true;
      status.textContent = "Reading the text…";
      try {
        charnnInspect.render(view, await post("/v1/inspect", { text: value }));
        status.textContent = "";
      } catch (e) {
        status.textContent = e.message;
      } finally {
        run.disabled = false;
      }
    });
    return section;
  }

  function buildTabs(main, section) {
    const nav = el("nav", { className: "tabs" });
    nav.setAttribute("role", "tablist");
    const tabs = [["tab-generate", "Generate", main], ["tab-inspect", "Look inside", section]];
    for (const [id, name, panel] of tabs) {
      const button = el("button", { id, type: "button", textContent: name });
      button.setAttribute("role", "tab");
      button.addEventListener("click", () => {
        for (const [otherId, , other] of tabs) {
          other.hidden = other !== panel;
          document.getElementById(otherId).setAttribute("aria-selected", String(other === panel));
        }
      });
      nav.appendChild(button);
    }
    main.before(nav);
    main.after(section);
  }

  async function highlightCopies(event) {
    const output = document.getElementById("output");
    const status = document.getElementById("status");
    const text = event.detail;
    // the spans' offsets count code points (an emoji is one), not the UTF-16 units a string is indexed by
    const chars = Array.from(text);
    const part = (from, to) => chars.slice(from, to).join("");
    try {
      const found = await post("/v1/copying", { text, k: COPY_K });
      if (output.textContent !== text) return; // a new generation started meanwhile
      const parts = [];
      let at = 0;
      for (const s of found.spans) {
        parts.push(document.createTextNode(part(at, s.start)));
        const mark = el("mark", { className: "copied", textContent: part(s.start, s.start + s.length) });
        mark.title = `copied from ${s.file.split("/").pop()}, line ${s.line}`;
        parts.push(mark);
        at = s.start + s.length;
      }
      parts.push(document.createTextNode(part(at)));
      output.replaceChildren(...parts);
      status.textContent += ` ${found.copied_chars} chars in copied spans of ${COPY_K}+ (highlighted).`;
    } catch (e) {
      status.textContent += ` Copy check: ${e.message}`;
    }
  }

  const main = document.querySelector("main");
  buildTabs(main, buildTab());
  document.addEventListener("charnn:generated", highlightCopies);
})();
