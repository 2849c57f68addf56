"""The look inside as data (what `--json`, the page and the server's endpoint show) and as one
self-contained HTML page (styles, script and data inline: it opens without a network)."""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np

from charnn.config import MAX_INSPECT_CHARS, InspectConfig
from charnn.declare import build
from charnn.errors import ConfigError
from charnn.fileio import atomic_write
from charnn.inspection.features import find_units, units_to_show
from charnn.inspection.trace import trace
from charnn.store.model_dir import LoadedModel, load_model
from charnn.text.files import read_given_text


def inspection(loaded: LoadedModel, text: str, units: int = 6, limit: int = MAX_INSPECT_CHARS) -> dict:
    """Per char: surprisal (nats) and top guesses; per layer: the units found for each feature and the
    activations of the `units` best ones, in the order shown."""
    t = trace(loaded.model, loaded.vocab, text, limit)
    known = t.surprisal[~np.isnan(t.surprisal)]
    layers = []
    for k, acts in enumerate(t.layers):
        found = find_units(acts, text)
        shown = [
            {"unit": u, "feature": name, "r": round(r, 3), "values": [round(float(v), 3) for v in acts[:, u]]}
            for u, name, r in units_to_show(found, units)
        ]
        features = {name: [{"unit": u, "r": round(r, 3)} for u, r in best] for name, best in found.items()}
        layers.append({"layer": k, "units": shown, "features": features})
    return {
        "model": f"{loaded.config.cell.upper()} {loaded.config.layers}x{loaded.config.hidden}",
        "text": text,
        "surprisal": [None if math.isnan(s) else round(float(s), 4) for s in t.surprisal],
        "mean_surprisal": round(float(known.mean()), 4) if len(known) else None,
        "guesses": [[[c, round(p, 4)] for c, p in g] for g in t.guesses],
        "layers": layers,
    }


def _asset(name: str) -> str:
    return resources.files("charnn").joinpath(f"inspection/{name}").read_text(encoding="utf-8")


# The HTML parser, not JavaScript, decides where a <script> ends: "</script>", or "<!--" then "<script"
# (after which "</script>" no longer closes it), must never appear in the data. So no "<", ">" or "&" is left
# as it is, nor the line separators older JavaScript refuses in strings; the escapes read back the same.
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def render_html(data: dict) -> str:
    """One page holding the view's styles, script and `data`."""
    payload = json.dumps(data, ensure_ascii=False).translate(_SCRIPT_SAFE)
    title = html.escape(f"charnn inspect: {data['model']}")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>\n'
        f"<style>{_asset('view.css')}</style></head>\n<body>\n<h1>{title}</h1>\n"
        '<div id="inspect-view"></div>\n'
        f"<script>{_asset('view.js')}</script>\n"
        f'<script>charnnInspect.render(document.getElementById("inspect-view"), {payload});</script>\n'
        "</body></html>\n"
    )


def read_text(cfg: InspectConfig) -> str:
    """The text given with --text, or read from --file (stdin for '-')."""
    if (cfg.text is None) == (cfg.file is None):
        raise ConfigError("give the text to look inside with --text TEXT or --file FILE (one of them)")
    if cfg.text is not None:
        return cfg.text
    return read_given_text(cfg.file)


def inspect_to(model: str | Path | LoadedModel, as_json: bool = False, **settings: object) -> str:
    """Write the page to `out` (or, with `as_json`, return the data as JSON); returns what to print.

    `settings`: InspectConfig's (text, file, out, units)."""
    cfg = build(InspectConfig, settings)
    data = _looked_at(model, cfg)
    if as_json:
        return json.dumps(data, ensure_ascii=False)
    _write_page(Path(cfg.out).expanduser(), data)
    mean = data["mean_surprisal"]
    return f"charnn: wrote {cfg.out} ({len(data['text']):,} chars, mean surprisal {mean} nats/char)"


def inspect(model: str | Path | LoadedModel, **settings: object) -> dict:
    """What `charnn inspect --json` prints, as a dict; the page is written only where `out` is given.

    `settings`: InspectConfig's (text, file, out, units)."""
    cfg = build(InspectConfig, settings)
    data = _looked_at(model, cfg)
    if settings.get("out") is not None:
        _write_page(Path(cfg.out).expanduser(), data)
    return data


def _looked_at(model: str | Path | LoadedModel, cfg: InspectConfig) -> dict:
    text = read_text(cfg)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    return inspection(loaded, text, cfg.units)


def _write_page(out: Path, data: dict) -> None:
    atomic_write(out, render_html(data).encode("utf-8"))
