"""`charnn export`: a folder holding the ONNX step graph, the vocabulary and charnn.json; for `--format web`
also a page and onnxruntime-web (from npm, bundled) so that it runs in a browser with no server of ours."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from charnn import __version__
from charnn.config import ExportConfig, env_path
from charnn.declare import build_each
from charnn.errors import CharnnError, ConfigError, RunDirError
from charnn.export.graph import OPSET, onnx_bytes, state_names
from charnn.fileio import write_folder
from charnn.sampling import default_start
from charnn.store.model_dir import LoadedModel, load_model

FORMAT_VERSION = 1
ORT_WEB_VERSION = "1.31.1"  # pinned here and in web/package.json (package-lock.json holds its hash)
# The WASM build with SIMD (single-threaded unless the page is cross-origin isolated) and its loader.
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE_FILES = ("index.html", "charnn-web.js")
# Above this a browser tab downloads and holds the weights slowly, and phones may run out of memory.
WEB_WARN_BYTES = 48 * 2**20
_CHECKOUT_ORT = Path(__file__).resolve().parents[3] / "web" / "node_modules" / "onnxruntime-web" / "dist"


@dataclass
class Exported:
    """What an export wrote: the folder, each file's size in bytes, and warnings for the user."""

    path: Path
    sizes: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def describe_graph(loaded: LoadedModel) -> dict:
    """charnn.json: what the graph computes and how to drive it."""
    cfg, training = loaded.config, loaded.info.get("training", {})
    names = state_names(cfg.cell)
    return {
        "format": "charnn-onnx-step",
        "format_version": FORMAT_VERSION,
        "charnn": __version__,
        "model": cfg.to_dict(),
        "weights": "fp32",
        "opset": OPSET,
        "inputs": {"ids": ["batch"], **{n: ["layers", "batch", "hidden"] for n in names}},
        "outputs": {
            "logits": ["batch", "vocab"],
            **{f"{n}_out": ["layers", "batch", "hidden"] for n in names},
        },
        "state": "all zeros to start; feed each *_out back as the next step's input of the same name",
        "start": "feed the start string one char per step from the zero state; sample from the last logits",
        "default_start": default_start(loaded.vocab),
        "val_loss": training.get("val_loss"),
        "trained": {k: training[k] for k in ("preset", "data", "steps") if k in training},
    }


def ort_web_files() -> dict[str, bytes]:
    """onnxruntime-web's files to bundle, from $CHARNN_ORT_WEB or the checkout's web/node_modules."""
    dist = env_path("CHARNN_ORT_WEB") or _CHECKOUT_ORT
    package = dist.parent / "package.json"
    try:
        version = json.loads(package.read_text(encoding="utf-8")).get("version")
        files = {name: (dist / name).read_bytes() for name in ORT_FILES}
    except (OSError, ValueError):
        raise CharnnError(
            f"export --format web bundles onnxruntime-web {ORT_WEB_VERSION} from npm, not found in {dist}; "
            "run `bash scripts/web_deps.sh` in a charnn checkout (needs npm) "
            "or set CHARNN_ORT_WEB to its dist/ folder"
        ) from None
    if version != ORT_WEB_VERSION:
        raise CharnnError(
            f"{dist}: onnxruntime-web {version}, charnn's page is tested with {ORT_WEB_VERSION}"
        )
    return files


def ort_web_available() -> bool:
    """Whether onnxruntime-web's files are where export --format web looks for them."""
    try:
        ort_web_files()
    except CharnnError:
        return False
    return True


def page_files() -> dict[str, bytes]:
    """The page and its script (package data)."""
    folder = resources.files("charnn.export") / "web"
    return {name: (folder / name).read_bytes() for name in PAGE_FILES}


def check_out(out: Path, force: bool, model: Path) -> None:
    """Refuse an --out that is a file, or a non-empty folder unless --force, or one that --force would
    replace with the model being exported inside it, or the current folder."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: --out is a file, not a folder")
    where = out.resolve()
    for inside, what in ((model.resolve(), "the model being exported"), (Path.cwd(), "the current folder")):
        if where == inside or where in inside.parents:
            raise RunDirError(f"{out}: --out holds {what}; export into a folder of its own")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RunDirError(f"{out}: --out is not empty; pass --force to replace what it holds")


def export_files(loaded: LoadedModel, format: str) -> dict[str, bytes]:
    """The files of an export, by name: the graph, vocabulary and charnn.json; for web, the page too."""
    info = describe_graph(loaded)
    files = {"model.onnx": onnx_bytes(loaded.model), "vocab.json": loaded.vocab.to_json().encode("utf-8")}
    if format == "web":
        info["onnxruntime_web"] = ORT_WEB_VERSION
        files |= page_files() | ort_web_files()
    files["charnn.json"] = (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return files


def export(model: str | Path | LoadedModel, **settings: object) -> Exported:
    """Write `model` as ONNX (`format="onnx"`) or as a browser page (`format="web"`) into `out`.

    `settings`: ExportConfig's (format, out, force)."""
    (cfg,) = build_each(settings, ExportConfig)
    if not cfg.out:
        raise ConfigError("--out is required: the folder to write the export into")
    out = Path(cfg.out).expanduser()
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    check_out(out, cfg.force, loaded.path)
    files = export_files(loaded, cfg.format)
    warnings = []
    size = len(files["model.onnx"])
    if cfg.format == "web" and size > WEB_WARN_BYTES:
        warnings.append(
            f"model.onnx is {size / 2**20:.1f} MB: a browser tab downloads and holds all of it, "
            f"which is slow above {WEB_WARN_BYTES // 2**20} MB and may not fit a phone's memory"
        )
    write_folder(out, files)
    return Exported(out, {name: len(data) for name, data in files.items()}, warnings)
