"""The `charnn` command: parses flags into the library's settings and turns errors into one stderr line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from charnn.config import (
    BATCHINGS,
    MODEL_FIELDS,
    PRESETS,
    TRAIN_FIELDS,
    ModelConfig,
    TrainConfig,
    describe_presets,
    parse_duration,
)
from charnn.errors import CharnnError

_MODEL_DEFAULTS = ModelConfig()
_TRAIN_DEFAULTS = TrainConfig()
SEPARATOR = "\n" + "-" * 40 + "\n"


def _default(name: str) -> str:
    for defaults in (_MODEL_DEFAULTS, _TRAIN_DEFAULTS):
        if hasattr(defaults, name):
            return f"(seed default: {getattr(defaults, name)})"
    raise KeyError(name)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except CharnnError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a text",
        description="Train a character-level model. With no flags: the tutorial's model on tiny Shakespeare.",
        epilog="presets (flags given on the command line override a preset's values):\n" + describe_presets(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", help="'shakespeare' (built in), a text file or a folder of text files " + _default("data")
    )
    g.add_argument("--encoding", help="text encoding of --data, e.g. latin-1 " + _default("encoding"))
    g.add_argument(
        "--val-fraction",
        type=float,
        help="last fraction of the text kept for validation " + _default("val_fraction"),
    )
    g.add_argument(
        "--batching",
        choices=BATCHINGS,
        help="windows: shuffled chunks (tutorial); stream: contiguous streams carrying the state; "
        "random: windows starting anywhere, drawn afresh each batch " + _default("batching"),
    )
    g.add_argument("--seq-len", type=int, help="characters per training window " + _default("seq_len"))
    g.add_argument("--batch-size", type=int, help="windows per batch " + _default("batch_size"))
    g = p.add_argument_group("model")
    g.add_argument("--preset", default="seed", choices=tuple(PRESETS), help="named settings (default: seed)")
    g.add_argument("--cell", choices=("lstm", "gru", "rnn"), help="recurrent cell " + _default("cell"))
    g.add_argument("--layers", type=int, help="stacked recurrent layers " + _default("layers"))
    g.add_argument("--hidden", type=int, help="units per recurrent layer " + _default("hidden"))
    g.add_argument("--embedding", type=int, help="embedding size " + _default("embedding"))
    g.add_argument("--dropout", type=float, help="dropout between recurrent layers " + _default("dropout"))
    g.add_argument(
        "--io-dropout",
        type=float,
        help="dropout on the embedding's output and the last layer's output " + _default("io_dropout"),
    )
    g = p.add_argument_group("optimisation")
    stop = g.add_mutually_exclusive_group()
    stop.add_argument(
        "--epochs",
        type=int,
        help="passes over the training text (default: 10 unless --max-steps or --time-budget)",
    )
    stop.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (default: none)")
    g.add_argument(
        "--time-budget",
        type=_duration,
        help="stop after this much training time, e.g. 90s, 10m, 2h (default: none)",
    )
    g.add_argument("--lr", type=float, help="Adam learning rate " + _default("lr"))
    g.add_argument(
        "--schedule", choices=("constant", "cosine"), help="learning-rate schedule " + _default("schedule")
    )
    g.add_argument("--warmup", type=int, help="steps of linear learning-rate warm-up " + _default("warmup"))
    g.add_argument(
        "--clip",
        type=float,
        help="max gradient norm, 0 for none (default: 5.0 with --batching stream, else 0)",
    )
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay " + _default("weight_decay"))
    g.add_argument("--seed", type=int, help="seed for weights, data order and dropout " + _default("seed"))
    g = p.add_argument_group("run")
    g.add_argument("--out", help="run folder (default: runs/PRESET-DATE-TIME)")
    g.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest checkpoint"
    )
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument(
        "--eval-every",
        type=int,
        help="also validate every N steps, 0 for per epoch only " + _default("eval_every"),
    )
    g.add_argument(
        "--save-every",
        type=int,
        help="also checkpoint every N steps, 0 for per epoch only " + _default("save_every"),
    )
    g.add_argument(
        "--keep", type=int, help="newest checkpoints to keep (the best is always kept) " + _default("keep")
    )
    g.add_argument("--log-every", type=int, help="print the mean loss every N steps " + _default("log_every"))
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train " + _default("device"))
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="auto: bf16 where the hardware has it natively, else fp32 " + _default("precision"),
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.set_defaults(handler=_train)


def _model_command(
    sub: argparse._SubParsersAction, name: str, help: str, **kwargs
) -> argparse.ArgumentParser:
    """A subcommand whose first argument is a model (run folder or model folder), defaults shown in --help."""
    p = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)
    p.add_argument("model", metavar="MODEL", help="a run folder (its best model) or a model folder")
    return p


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = _model_command(sub, "generate", "generate text from a model (streams to stdout)")
    p.add_argument(
        "--start",
        default="",
        help="text to start from (empty: start of a line); write --start=TEXT when TEXT begins with -",
    )
    p.add_argument("--length", type=int, default=1000, help="characters to generate")
    p.add_argument("--temperature", type=float, default=1.0, help="below 1: safer text; above 1: wilder")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely chars")
    p.add_argument(
        "--top-p", type=float, default=None, help="sample only among the most likely chars adding up to p"
    )
    p.add_argument("--greedy", action="store_true", help="always take the most likely char")
    p.add_argument(
        "--num-samples", type=int, default=1, help="samples generated together, printed one after another"
    )
    p.add_argument("--seed", type=int, default=None, help="same seed, same text (default: random)")
    p.add_argument("--skip-unknown", action="store_true", help="drop start characters the model never saw")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="where to run")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "int8"),
        default="auto",
        help="weights while stepping; auto: the fastest format the model's saved check allows (else fp32)",
    )
    p.add_argument(
        "--no-verify", action="store_true", help="load weights whose sha256 does not match config.json"
    )
    p.set_defaults(handler=_generate)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _model_command(sub, "evaluate", "loss over a whole split of a text")
    p.add_argument("--data", default=None, help="text to evaluate on (default: the model's training text)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val", help="which part of the text")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="weights to compute the loss with",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="where to run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_evaluate)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = _model_command(sub, "info", "what a model is and how it was trained")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_info)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = _model_command(
        sub,
        "serve",
        "a web page and HTTP API to generate from a model",
        description="Serve the playground page and the HTTP API (needs: pip install 'charnn[serve]').",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)"
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--max-length", type=int, default=5000, help="longest generation one request may ask for")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one request may generate for")
    p.add_argument("--max-running", type=int, default=2, help="generations at once")
    p.add_argument("--max-waiting", type=int, default=8, help="requests queued beyond those; more get 503")
    p.set_defaults(handler=_serve)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure training and generation speed on this machine",
        description="Time the tutorial's model here: training chars/s per precision, generation chars/s per "
        "weight format, start-up time, peak memory, and this machine's GEMM and matrix-vector rates. "
        "benchmarks/run.py adds the naive PyTorch port beside it.",
    )
    p.add_argument("--quick", action="store_true", help="fewer steps, no scaling table (under 2 minutes)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charnn",
        description="Train character-level recurrent language models on any text and generate from them.",
    )
    from charnn import __version__

    parser.add_argument("--version", action="version", version=f"charnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_generate, _add_evaluate, _add_info, _add_serve, _add_bench):
        add(sub)
    return parser


_TRAIN_SETTINGS = sorted(MODEL_FIELDS | TRAIN_FIELDS)


def _train(args: argparse.Namespace) -> int:
    import datetime

    from charnn.training.run import train

    out = args.out or f"runs/{args.preset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    settings = {name: getattr(args, name) for name in _TRAIN_SETTINGS}
    result = train(
        out, preset=args.preset, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet, **settings
    )
    val = f", best val loss {result.val_loss:.4f} nats/char" if result.val_loss is not None else ""
    print(
        f"trained {result.steps} steps ({result.epochs:.2f} epochs, {result.chars_seen:,} chars) "
        f"in {result.elapsed_s:.1f} s{val}; model in {result.run_dir / 'model'}",
        file=sys.stderr,
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from charnn.api import load, stream
    from charnn.sampling import SamplingConfig

    cfg = SamplingConfig(
        args.length, args.temperature, args.top_k, args.top_p, args.greedy, args.num_samples, args.seed
    )
    loaded = load(args.model, args.device, verify=not args.no_verify)
    start, chars = stream(loaded, args.start, cfg, args.precision, args.skip_unknown)
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
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from charnn.api import evaluate

    report = evaluate(args.model, args.data, args.split, args.device, args.precision)
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

    report = describe(load(args.model))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    m = report["model"]
    print(f"model      {report['path']}")
    print(f"shape      {m['cell'].upper()} {m['layers']}x{m['hidden']}, embedding {m['embedding']}", end="")
    print(f", dropout {m['dropout']}, io dropout {m['io_dropout']}")
    print(f"parameters {report['parameters']:,}")
    print(f"vocabulary {report['vocab_size']} chars: {report['vocab']!r}")
    for key, value in report["training"].items():
        print(f"training   {key}: {value}")
    checks = report["inference"].get("val_loss", {})
    if checks:
        losses = ", ".join(f"{fmt} {loss:.4f}" for fmt, loss in checks.items())
        print(f"weights    val loss {losses} nats/char ({report['inference'].get('val_chars', 0):,} chars)")
    chosen = report["generate_weights"]
    print(f"generate   --precision auto: {chosen['batch_1']} weights, {chosen['batch_64']} for batches")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from charnn.server import serve

    for name in ("max_length", "max_running", "timeout"):
        if getattr(args, name) <= 0:
            raise CharnnError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_waiting < 0:
        raise CharnnError(f"--max-waiting must be 0 or more, got {args.max_waiting}")
    serve(
        args.model,
        args.host,
        args.port,
        max_length=args.max_length,
        timeout_s=args.timeout,
        max_running=args.max_running,
        max_waiting=args.max_waiting,
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from charnn.bench import main as bench_main

    return bench_main(args.quick, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CharnnError as e:
        print(f"charnn: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("charnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `head`) went away: not an error of ours. Silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _is_out_of_memory(e):
            return _internal_error(e)
        print("charnn: error: out of memory; use a smaller model, batch or text", file=sys.stderr)
        return 1
    except Exception as e:
        return _internal_error(e)


def _is_out_of_memory(e: RuntimeError) -> bool:
    text = str(e).lower()
    return "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text


def _internal_error(e: Exception) -> int:
    """A bug in charnn, not in the input: one line, and the traceback on request."""
    if os.environ.get("CHARNN_DEBUG"):
        raise e
    first_line = str(e).splitlines()[0] if str(e) else ""
    print(
        f"charnn: internal error: {type(e).__name__}: {first_line} (set CHARNN_DEBUG=1 for details)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
