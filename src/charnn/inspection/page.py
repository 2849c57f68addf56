"""The look inside as data (what `--json`, the page and the server's endpoint show) and as one
self-contained HTML page (styles, script and data inline: it opens without a network)."""

from __future__ import annotations

import html
import json
import math
import os
from importlib import resources
from pathlib import Path

import numpy as np

from charnn.config import MAX_INSPECT_CHARS, InspectConfig
from charnn.declare import build
from charnn.errors import NOT_FINITE, ConfigError, ModelFileError, RunDirError
from charnn.fileio import atomic_write
from charnn.inspection.features import find_units, units_to_show
from charnn.inspection.trace import trace
from charnn.store.model_dir import LoadedModel, as_loaded
from charnn.store.rundir import ARGS_FILE
from charnn.text.files import read_given_text

FEATURE_UNITS = 3  # the units listed for each feature


def inspection(loaded: LoadedModel, text: str, units: int = 6, limit: int = MAX_INSPECT_CHARS) -> dict:
    """Per char: surprisal (nats) and top guesses; per layer: the units found for each feature and the
    activations of the `units` best ones, in the order shown."""
    t = trace(loaded.model, loaded.vocab, text, limit)
    if not all(math.isfinite(p) for g in t.guesses for _, p in g):
        raise ModelFileError(NOT_FINITE)
    known = t.surprisal[~np.isnan(t.surprisal)]
    layers = []
    for k, acts in enumerate(t.layers):
        found = find_units(acts, text, top=max(FEATURE_UNITS, units))  # enough to show `units` distinct ones
        shown = [
            {"unit": u, "feature": name, "r": round(r, 3), "values": [round(float(v), 3) for v in acts[:, u]]}
            for u, name, r in units_to_show(found, units)
        ]
        features = {
            name: [{"unit": u, "r": round(r, 3)} for u, r in best[:FEATURE_UNITS]]
            for name, best in found.items()
        }
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


_PAGE_START = '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>'
_TITLE = "charnn inspect: "  # how every page's title begins


def render_html(data: dict) -> str:
    """One page holding the view's styles, script and `data`."""
    payload = json.dumps(data, ensure_ascii=False).translate(_SCRIPT_SAFE)
    title = html.escape(f"{_TITLE}{data['model']}")
    return (
        f"{_PAGE_START}{title}</title>\n"
        f"<style>{_asset('view.css')}</style></head>\n<body>\n<h1>{title}</h1>\n"
        '<div id="inspect-view"></div>\n'
        f"<script>{_asset('view.js')}</script>\n"
        f'<script>charnnInspect.render(document.getElementById("inspect-view"), {payload});</script>\n'
        "</body></html>\n"
    )


def read_text(cfg: InspectConfig, encoding: str = "utf-8") -> str:
    """The text given with --text, or read from --file (stdin for '-') in the model's encoding; CRLF as LF
    either way, as the training text was read."""
    if (cfg.text is None) == (cfg.file is None):
        raise ConfigError("give the text to look inside with --text TEXT or --file FILE (one of them)")
    if cfg.text is not None:
        return cfg.text.replace("\r\n", "\n")
    return read_given_text(cfg.file, encoding, MAX_INSPECT_CHARS)


def inspect_to(
    model: str | Path | LoadedModel, as_json: bool = False, verify: bool = True, **settings: object
) -> str:
    """Write the page to `out` and say so, or with `as_json` return the data as JSON (the page written too
    where `out` is given); returns what to print.

    `settings`: InspectConfig's (text, file, out, units); `verify` checks the weights' sha256."""
    if not as_json and settings.get("out") is None:
        settings = {**settings, "out": build(InspectConfig, settings).out}
    data = inspect(model, verify, **settings)
    if as_json:
        return json.dumps(data, ensure_ascii=False, allow_nan=False)
    mean = "n/a" if data["mean_surprisal"] is None else f"{data['mean_surprisal']} nats/char"
    return f"charnn: wrote {settings['out']} ({_count(len(data['text']))}, mean surprisal {mean})"


def _count(chars: int) -> str:
    return f"{chars:,} char{'' if chars == 1 else 's'}"


def inspect(model: str | Path | LoadedModel, verify: bool = True, **settings: object) -> dict:
    """What `charnn inspect --json` prints, as a dict; the page is written only where `out` is given.

    `settings`: InspectConfig's (text, file, out, units); `verify` checks the weights' sha256."""
    cfg = build(InspectConfig, settings)
    loaded = as_loaded(model, verify=verify)
    out = None if settings.get("out") is None else _page_path(cfg.out, loaded, cfg.file)
    text = read_text(cfg, loaded.info.get("training", {}).get("encoding") or "utf-8")
    data = inspection(loaded, text, cfg.units)
    if out is not None:
        atomic_write(out, render_html(data).encode("utf-8"))
    return data


def _page_path(given: str, loaded: LoadedModel, source: str | None) -> Path:
    """Where the page goes; refused where it would replace the model's files or the text read."""
    if not given:
        raise RunDirError("--out is empty; give the page's file name (e.g. inspect.html)")
    if given.endswith(("/", os.sep)):
        raise RunDirError(f"{given}: --out names a folder; give the page's file name (e.g. inspect.html)")
    out = Path(given).expanduser()
    where, model = out.resolve(), loaded.path.resolve()
    home = model.parent if (model.parent / ARGS_FILE).exists() else model  # a run's model: the whole run
    if home in where.parents:
        raise RunDirError(
            f"{given}: --out lies in the folder of the model inspected ({home}); write it elsewhere"
        )
    if source not in (None, "-") and where == Path(source).expanduser().resolve():
        raise RunDirError(f"{given}: --out is the --file being inspected; write the page elsewhere")
    if where.is_file() and not _is_page(where):
        raise RunDirError(
            f"{given}: exists and is not a page charnn inspect wrote, which alone --out replaces; "
            "choose another name (--file is the flag for the text to read)"
        )
    return where if out.is_symlink() else out  # through a link: the page replaces its target, the link stays


def _is_page(path: Path) -> bool:
    """Whether `path` begins as render_html's pages do."""
    start = (_PAGE_START + _TITLE).encode()
    try:
        with open(path, "rb") as f:
            return f.read(len(start)) == start
    except OSError:
        return False
