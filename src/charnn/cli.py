"""The `charnn` command: flags built from the settings declared in config.py; errors as one stderr line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import secrets
import sys
from collections.abc import Sequence
from typing import Any

from charnn.config import (
    CopyingConfig,
    EvaluateConfig,
    ExportConfig,
    GenerateConfig,
    InspectConfig,
    ModelConfig,
    RunOptions,
    SamplingConfig,
    ServeConfig,
    TrainConfig,
    debug,
)
from charnn.declare import build
from charnn.errors import CharnnError, RunDirError, Stopped
from charnn.flags import add_settings, given, parse, switch

SEPARATOR = "\n" + "-" * 40 + "\n"


def _add_train(sub: argparse._SubParsersAction) -> None:
    from charnn.presets import CATALOGUE, describe_presets

    p = sub.add_parser(
        "train",
        help="train a model on a text",
        description="Train a character-level model (no flags: the tutorial's model on tiny Shakespeare).\n"
        "Defaults are the tutorial's (the seed preset); flags given beside --preset override its values.",
        epilog="presets (and the exact validation loss each reached on tiny Shakespeare):\n"
        + describe_presets(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings(p, "train", choices={"preset": tuple(CATALOGUE)})
    p.set_defaults(handler=_train, command_parser=p)


def _model_command(
    sub: argparse._SubParsersAction, name: str, help: str, **kwargs
) -> argparse.ArgumentParser:
    """A subcommand whose first argument is a model (run folder or model folder)."""
    p = sub.add_parser(name, help=help, **kwargs)
    p.set_defaults(command_parser=p)
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a run folder (its best model), a model folder, or shakespeare (shipped)",
    )
    add_settings(p, name)
    return p


def build_parser() -> argparse.ArgumentParser:
    from charnn import __version__

    parser = argparse.ArgumentParser(
        prog="charnn",
        description="Train character-level recurrent language models on any text and generate from them.",
    )
    parser.add_argument("--version", action="version", version=f"charnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _model_command(sub, "generate", "generate text from a model (streams to stdout)").set_defaults(
        handler=_generate
    )
    p = _model_command(sub, "evaluate", "loss over a whole split of a text")
    switch(p, "--json", "print one JSON object")
    p.set_defaults(handler=_evaluate)
    p = _model_command(sub, "info", "what a model is and how it was trained")
    switch(p, "--json", "print one JSON object")
    p.set_defaults(handler=_info)
    description = "Serve the playground page and the HTTP API (needs: pip install 'charnn[serve]')."
    p = _model_command(
        sub, "serve", "a web page and HTTP API to generate from a model", description=description
    )
    p.set_defaults(handler=_serve)
    description = (
        "Write a model as an ONNX step graph, or as a page that generates in a browser (needs: pip "
        "install 'charnn[export]'; --format web also onnxruntime-web from npm, see docs/export.md)."
    )
    p = _model_command(sub, "export", "the model as ONNX, or as a web page", description=description)
    p.set_defaults(handler=_export)
    p = _model_command(sub, "copying", "how much of what a model writes is copied from its training text")
    switch(p, "--json", "print one JSON object")
    p.set_defaults(handler=_copying)
    p = _model_command(sub, "inspect", "a page showing what a model expects and what its units track")
    switch(p, "--json", "print one JSON object instead of writing the page")
    p.set_defaults(handler=_inspect)
    p = sub.add_parser(
        "bench",
        help="measure training and generation speed on this machine",
        description="Time the tutorial's model here: training chars/s per precision, generation chars/s per "
        "weight format, start-up time, peak memory, and this machine's GEMM and matrix-vector rates. "
        "benchmarks/run.py adds the naive PyTorch port beside it.",
    )
    switch(p, "--quick", "fewer steps, no scaling table (under 2 minutes)")
    switch(p, "--json", "print one JSON object")
    p.set_defaults(handler=_bench, command_parser=p)
    return parser


def _train(args: argparse.Namespace) -> int:
    import datetime

    from charnn.training.distributed import ranks_from_env
    from charnn.training.run import train

    opts = build(RunOptions, given(args, RunOptions))
    if opts.resume and not opts.out:  # a new folder's name would say "no run to resume here"
        raise RunDirError("--resume needs --out RUN, the run folder to continue")
    out = opts.out or f"runs/{opts.preset or 'seed'}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    settings = {**given(args, ModelConfig), **given(args, TrainConfig)}
    run = {"preset": opts.preset, "resume": opts.resume, "overwrite": opts.overwrite, "quiet": opts.quiet}
    result = train(out, **run, **settings)
    if not ranks_from_env().is_main:  # under torchrun, rank 0 alone reports
        return 0
    if opts.resume and result.steps_now == 0:
        print(
            f"charnn: the run had already reached its stop at step {result.steps}; to train on, resume it "
            "with a larger --max-steps, --epochs or --time-budget",
            file=sys.stderr,
        )
    val = f", best val loss {result.val_loss:.4f} nats/char" if result.val_loss is not None else ""
    print(
        f"trained {result.steps} steps ({result.epochs:.2f} epochs, {result.chars_seen:,} chars) "
        f"in {result.elapsed_s:.1f} s of training{val}; model in {result.run_dir / 'model'}",
        file=sys.stderr,
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from charnn.api import load, stream

    cfg = build(SamplingConfig, given(args, SamplingConfig))
    drawn = cfg.seed is None and not cfg.greedy  # a seed drawn here is said, so the text can be had again
    if drawn:
        cfg = dataclasses.replace(cfg, seed=secrets.randbelow(2**32))
    options = build(GenerateConfig, given(args, GenerateConfig))
    loaded = load(args.model, options.device, options.verify)
    start, chars = stream(loaded, cfg, options.weights)
    rest: list[list[str]] = [[] for _ in range(cfg.num_samples - 1)]
    out = sys.stdout
    out.write(start)
    out.flush()
    for step in chars:
        out.write(step[0])
        out.flush()
        for part, c in zip(rest, step[1:], strict=True):
            part.append(c)
    for part in rest:
        out.write(SEPARATOR + start + "".join(part))
    out.write("\n")
    out.flush()
    if drawn:
        print(f"charnn: seed {cfg.seed} (--seed {cfg.seed} gives this text again)", file=sys.stderr)
    return 0


def _model(args: argparse.Namespace, device: str = "cpu") -> Any:
    """The MODEL argument as the command's API takes it: its path, or with --no-verify the model loaded
    without checking its weights' sha256."""
    if args.verify is not False:
        return args.model
    from charnn.api import load

    return load(args.model, device, verify=False)


def _evaluate(args: argparse.Namespace) -> int:
    from charnn.api import evaluate
    from charnn.text.corpus import warn_skipped

    settings = given(args, EvaluateConfig)
    model = _model(args, build(EvaluateConfig, settings).device)
    report = evaluate(model, **settings)
    warn_skipped(report.get("skipped", []))
    if args.json:
        print(json.dumps(report))
        return 0
    c, w = report["carried"], report["windows"]
    print(f"{report['split']} split of {report['data']}: {c['chars']:,} predicted chars")
    for label, r in (
        ("state carried through the split", c),
        (f"from a zero state per {w['window']} chars", w),
    ):
        print(
            f"  {label}: {r['nats_per_char']:.4f} nats/char  {r['bits_per_char']:.4f} bits/char  "
            f"perplexity {r['perplexity']:.3f}"
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    from charnn.api import describe, load

    report = describe(load(args.model, verify=args.verify is not False))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    m = report["model"]
    print(f"model      {report['path']}")
    print(f"shape      {m['cell'].upper()} {m['layers']}x{m['hidden']}, embedding {m['embedding']}", end="")
    print(f", dropout {m['dropout']}, io dropout {m['io_dropout']}", end="")
    print(f", weight dropout {m['weight_dropout']}" if m.get("weight_dropout") else "")
    print(f"parameters {report['parameters']:,}")
    print(f"vocabulary {report['vocab_size']} chars: {report['vocab']!r}")
    for key, value in report["training"].items():
        if key == "init_from":
            val = f"val loss {value['val_loss']:.4f}" if value.get("val_loss") is not None else "no val loss"
            value = (
                f"{value.get('path')} ({val}, weights sha256 {str(value.get('weights_sha256'))[:12]}, "
                f"{len(value.get('added_chars', ''))} chars added)"
            )
        print(f"training   {key}: {value}")
    checks = report["inference"].get("val_loss", {})
    if checks:
        losses = ", ".join(f"{fmt} {loss:.4f}" for fmt, loss in checks.items())
        print(f"weights    val loss {losses} nats/char ({report['inference'].get('val_chars', 0):,} chars)")
    chosen = report["generate_weights"]
    print(f"generate   --weights auto: {chosen['batch_1']} weights, {chosen['batch_64']} for batches")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from charnn.server import serve

    serve(_model(args), build(ServeConfig, given(args, ServeConfig)))
    return 0


def _export(args: argparse.Namespace) -> int:
    import signal

    from charnn.export.folder import export

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: a half-written export folder is removed, not left hidden

    signal.signal(signal.SIGTERM, stop)
    result = export(_model(args), **given(args, ExportConfig))
    for warning in result.warnings:
        print(f"charnn: warning: {warning}", file=sys.stderr)
    total = sum(result.sizes.values())
    print(f"exported {len(result.sizes)} files ({total / 2**20:.1f} MB) to {result.path}", file=sys.stderr)
    return 0


def _copying(args: argparse.Namespace) -> int:
    from charnn.copy_report import copying_report, format_report

    report = copying_report(_model(args), **given(args, CopyingConfig))
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from charnn.inspection.page import inspect_to

    summary = inspect_to(_model(args), as_json=args.json, **given(args, InspectConfig))
    print(summary, file=None if args.json else sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from charnn.bench import main as bench_main

    return bench_main(args.quick, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parse(parser, argv)
    if sys.stdout is None:  # closed: train, serve, export and inspect's page print only progress there
        if args.handler not in (_train, _serve, _export) and not (args.handler is _inspect and not args.json):
            print("charnn: error: stdout is closed: there is nowhere to print the result", file=sys.stderr)
            return 1
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    try:
        return args.handler(args)
    except (CharnnError, Stopped) as e:
        with contextlib.suppress(OSError):  # stderr gone too (a closed terminal's SIGHUP): the status says it
            if not getattr(e, "quiet", False):  # under torchrun the ranks but rank 0 stop without a word
                print(f"charnn: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("charnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `head`) went away: not an error of ours, but a training cut short by it is no
        # success (its own progress lines go silent instead: training/progress.py). Silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1 if args.handler is _train else 0
    except UnicodeEncodeError as e:
        print(
            f"charnn: error: the output holds characters its encoding ({e.encoding}) cannot write; "
            "set PYTHONIOENCODING=utf-8",
            file=sys.stderr,
        )
        return 1
    except OSError as e:  # the output (or an input) failed: stdout closed, a full disk, ...
        print(f"charnn: error: {_os_error_line(e)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _is_out_of_memory(e):
            return _internal_error(e)
        print("charnn: error: out of memory; use a smaller model, batch or text", file=sys.stderr)
        return 1
    except Exception as e:
        return _internal_error(e)


def _os_error_line(e: OSError) -> str:
    """An OSError that reached the top: charnn's own file writes name their path (fileio.write_error), so a
    nameless failure to write is the output's, on a full disk or device (`> /dev/full`)."""
    if e.filename:
        return f"{e.strerror or e}: {e.filename}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"cannot write the output to stdout ({e.strerror})"
    return str(e.strerror or e)


def _is_out_of_memory(e: RuntimeError) -> bool:
    text = str(e).lower()
    return "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text


def _internal_error(e: Exception) -> int:
    """A bug in charnn, not in the input: one line, and the traceback on request."""
    if debug():
        raise e
    first_line = str(e).splitlines()[0] if str(e) else ""
    print(
        f"charnn: internal error: {type(e).__name__}: {first_line} (set CHARNN_DEBUG=1 for details)",
        file=sys.stderr,
    )
    return 1
