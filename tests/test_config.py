"""Every setting is declared once (config.py): the command line, the Python API, the HTTP API's request models
and docs/cli.md agree with the declarations on every name, default and bound; the checks speak in flags."""

import inspect
import re
from pathlib import Path

import pytest

import charnn
from charnn import api
from charnn.cli import build_parser
from charnn.config import (
    ENVIRONMENT,
    SETTINGS_CLASSES,
    GenerateConfig,
    ModelConfig,
    RunOptions,
    SamplingConfig,
    ServeConfig,
    TrainConfig,
    command_settings,
)
from charnn.declare import build, build_each, declared
from charnn.errors import ConfigError
from charnn.training import run

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"
COMMANDS = ("train", "generate", "evaluate", "info", "serve", "export", "bench", "copying", "inspect")
OUTPUT_FLAGS = {
    "evaluate": {"--json"},
    "info": {"--json"},
    "bench": {"--quick", "--json"},
    "copying": {"--json"},
    "inspect": {"--json"},
}
DEFAULT = re.compile(r"\(default: (.*?)(?:; --[a-z-]+ is its older name)?\)$", re.S)


def flag_actions(command: str) -> dict:
    """The command's flags as argparse holds them, by their first spelling."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {a.option_strings[0]: a for a in sub._actions if a.option_strings and a.dest != "help"}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_flag_is_a_declared_setting_with_its_default_and_choices(command):
    actions = flag_actions(command)
    settings = {d.flag: d for d in command_settings(command)}
    assert set(actions) == set(settings) | OUTPUT_FLAGS.get(command, set())
    for flag, d in settings.items():
        action = actions[flag]
        assert action.dest == d.name and action.default is None  # not given: the declared default applies
        assert DEFAULT.search(action.help).group(1) == d.shown_default()
        assert tuple(action.option_strings[1:]) == d.how.aliases
        if d.how.choices and d.name != "preset":
            assert set(action.choices) == {*d.how.choices, *(old for old, _ in d.how.old_values)}


def test_no_two_settings_of_a_command_share_a_name():
    for command in ("train", "generate", "evaluate", "serve", "http"):
        names = [d.name for d in command_settings(command)]
        assert len(names) == len(set(names)), command


def doc_tables() -> dict[str, dict[str, tuple[tuple[str, ...], str]]]:
    """docs/cli.md's flag tables: command -> flag -> (older spellings, default as written)."""
    tables: dict[str, dict] = {}
    command = None
    for line in DOCS.read_text().splitlines():
        heading = re.match(r"## charnn (\w+)", line)
        if heading:
            command = heading.group(1)
        elif line.startswith("## "):
            command = None
        elif command and line.startswith("| `--"):
            first, default = [cell.strip() for cell in line.strip("|").split("|")[:2]]
            flag, *older = re.findall(r"`(--[a-z-]+)`", first)
            tables.setdefault(command, {})[flag] = (tuple(older), default.replace("`", ""))
    return tables


def test_docs_list_every_flag_with_the_default_help_shows():
    tables = doc_tables()
    assert set(tables) == set(COMMANDS)
    for command in COMMANDS:
        actions = flag_actions(command)
        assert set(tables[command]) == set(actions), command
        for flag, action in actions.items():
            older, default = tables[command][flag]
            assert older == tuple(action.option_strings[1:]), flag
            assert default == DEFAULT.search(action.help).group(1), (command, flag)


def test_docs_name_every_environment_variable_charnn_reads():
    table = DOCS.read_text().split("## Environment", 1)[1]
    assert re.findall(r"^\| `(CHARNN_\w+)` \|", table, re.M) == list(ENVIRONMENT)
    source = "".join(p.read_text() for p in (Path(charnn.__file__).parent).rglob("*.py"))
    assert set(re.findall(r"\bCHARNN_[A-Z_]+", source)) == set(ENVIRONMENT)


def test_python_keywords_have_the_declared_defaults():
    load = inspect.signature(api.load).parameters
    options = GenerateConfig()
    assert (load["device"].default, load["verify"].default) == (options.device, options.verify)
    train = inspect.signature(run.train).parameters
    for d in declared(RunOptions):
        if d.name != "out":
            assert train[d.name].default == d.default and train[d.name].kind is inspect.Parameter.KEYWORD_ONLY


def test_python_api_takes_every_declared_setting_and_refuses_others(trained_run):
    defaults = {d.name: d.default for d in declared(SamplingConfig)} | {"weights": "auto"}
    spelled_out = charnn.generate(trained_run, **{**defaults, "start": "All", "length": 30, "seed": 3})
    assert spelled_out == charnn.generate(trained_run, "All", 30, seed=3)
    assert charnn.generate(trained_run, "All", 30, seed=3, precision="int8") == charnn.generate(
        trained_run, "All", 30, seed=3, weights="int8"
    )
    with pytest.raises(ConfigError, match="unknown setting 'temprature'"):
        charnn.generate(trained_run, "All", 30, temprature=0.5)
    with pytest.raises(ConfigError, match="unknown setting 'splt'"):
        charnn.evaluate(trained_run, splt="train")
    with pytest.raises(ConfigError, match="unknown settings: hiden"):
        charnn.train(trained_run.parent / "other", hiden=3)


def test_http_request_models_are_the_sampling_declaration():
    pytest.importorskip("fastapi")
    from charnn.server.app import GenerateRequest, StreamRequest

    for model, left_out in ((GenerateRequest, set()), (StreamRequest, {"num_samples"})):
        expected = [d for d in declared(SamplingConfig) if d.name not in left_out]
        assert list(model.model_fields) == [d.name for d in expected]
        for d in expected:
            field = model.model_fields[d.name]
            bounds = {(kind := type(m).__name__.lower()): getattr(m, kind) for m in field.metadata}
            assert field.default == d.default and bounds == d.how.bounds, d.name


@pytest.mark.parametrize(
    ("cls", "given", "message"),
    [
        (ModelConfig, {"hidden": 0}, "--hidden must be at least 1, got 0"),
        (ModelConfig, {"hidden": 2.5}, "--hidden must be an integer, got 2.5"),
        (ModelConfig, {"cell": "lstn"}, "--cell must be one of lstm, gru, rnn, got 'lstn'"),
        (ModelConfig, {"dropout": 1.0}, "--dropout must be in [0, 1), got 1.0"),
        (TrainConfig, {"lr": 0.0}, "--lr must be in (0, 10], got 0.0 (Adam likes 1e-4 to 1e-2)"),
        (TrainConfig, {"warmup": -1}, "--warmup must be 0 or more, got -1"),
        (TrainConfig, {"time_budget": 0.0}, "--time-budget must be positive, got 0.0"),
        (TrainConfig, {"clip": float("inf")}, "--clip must be a finite number, got inf"),
        (SamplingConfig, {"length": -1}, "--length must be between 0 and 1,000,000, got -1"),
        (SamplingConfig, {"top_p": 1.5}, "--top-p must be in (0, 1], got 1.5"),
        (SamplingConfig, {"greedy": "yes"}, "--greedy must be true or false, got 'yes'"),
        (ServeConfig, {"port": 70000}, "--port must be between 1 and 65,535, got 70000"),
        (GenerateConfig, {"verify": None}, "--no-verify must be given, got None"),
    ],
)
def test_checks_name_the_flag_the_bound_and_the_value(cls, given, message):
    with pytest.raises(ConfigError) as raised:
        cls(**given)
    assert str(raised.value) == message


def test_older_spellings_of_flags_and_values_are_accepted():
    assert TrainConfig(lstm_kernel="fused").lstm_kernel == "pytorch"
    assert TrainConfig(lstm_kernel="charnn").lstm_kernel == "charnn-bf16"
    (options,) = build_each({"precision": "int8"}, GenerateConfig)
    assert options.weights == "int8"
    assert build(SamplingConfig, {"length": 5, "seed": None}).seed is None  # None: not given


def test_environment_variables_are_defaults_read_when_a_config_is_made(monkeypatch):
    monkeypatch.setenv("CHARNN_DIST_TIMEOUT", "2m")
    monkeypatch.setenv("CHARNN_LSTM_KERNEL", "charnn")
    cfg = TrainConfig()
    assert cfg.dist_timeout == 120.0 and cfg.lstm_kernel == "charnn-bf16"
    assert TrainConfig(lstm_kernel="pytorch").lstm_kernel == "pytorch"  # a setting given wins
    monkeypatch.setenv("CHARNN_DIST_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="CHARNN_DIST_TIMEOUT: not a duration: 'soon'"):
        TrainConfig()


def test_every_settings_class_is_frozen_and_keyword_only():
    for cls in SETTINGS_CLASSES:
        config = cls()
        with pytest.raises(AttributeError):
            config.__setattr__(declared(cls)[0].name, None)
        with pytest.raises(TypeError):
            cls(declared(cls)[0].default)
