from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from amberio import cli, logs
from amberio.cli import build_parser, load_cli_config, main
from amberio.errors import ConfigError
from tests.cli_helpers import amberio_cmd, assert_user_error

BAD_CONFIGS: list[tuple[str, str, tuple[str, ...]]] = [
    ("unknown top-level key", "registry: {backend: local}\ncolour: blue\n",
     ("colour: unknown top-level key",)),
    ("unknown nested key", "registry: {backend: local, colour: blue}\n",
     ("registry.colour: unknown key",)),
    ("unknown backend", "registry: {backend: etcd}\n",
     ("registry.backend: unknown value 'etcd'",)),
    ("missing required", "current_node: a\n", ("registry: missing required key",)),
    ("bad yaml", "registry: [\n", ("invalid YAML: line 2",)),
    ("wrong type", "registry: {backend: redis, redis: {url: 5}}\n",
     ("registry.redis.url: expected str, got int",)),
]  # fmt: skip


@pytest.mark.parametrize("command", ["serve", "server"])
@pytest.mark.parametrize(
    ("label", "text", "mentions"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS]
)
def test_bad_config_one_line_exit_2(
    tmp_path: Path, command: str, label: str, text: str, mentions: tuple[str, ...]
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    result = amberio_cmd(command, "--config", "bad.yaml", cwd=tmp_path)
    line = assert_user_error(result, "bad.yaml", *mentions)
    assert label  # (for the test id)
    assert line.count("bad.yaml") == 1


def test_bad_initial_cluster_at_init(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "registry: {backend: local}\n"
        "current_node: n1\n"
        "initial_cluster:\n"
        "  nodes:\n"
        "    - {node_id: n1, bind_addr: '127.0.0.1:1', disks: [{path: d}]}\n"
        "  replication: {min_write_replicas: 1, total_slots: many}\n"
    )
    result = amberio_cmd("server", "--config", "bad.yaml", "--init", cwd=tmp_path)
    assert_user_error(result, "bad.yaml: initial_cluster.replication.total_slots")
    assert not (tmp_path / "d").exists()


def test_wrong_type_initial_cluster_path(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "registry: {backend: local}\n"
        "initial_cluster:\n"
        "  nodes:\n"
        "    - {node_id: n1, bind_addr: '127.0.0.1:1', disks: [{path: d1}]}\n"
        "    - {node_id: n2, bind_addr: 19080, disks: [{path: d2}]}\n"
        "  replication: {min_write_replicas: 1}\n"
    )
    result = amberio_cmd("serve", "--config", "bad.yaml", "--current-node", "n1", "--init",
                         cwd=tmp_path)  # fmt: skip
    assert_user_error(result, "initial_cluster.nodes[1].bind_addr", "expected str, got int")


def test_data_dir_with_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text("registry: {backend: local}\n")
    result = amberio_cmd("serve", "--config", "ok.yaml", "--data-dir", "x", cwd=tmp_path)
    assert_user_error(result, "--data-dir cannot be combined with --config")


def test_bad_bind(tmp_path: Path) -> None:
    result = amberio_cmd("serve", "--init", "--bind", "localhost", cwd=tmp_path)
    assert_user_error(result, "--bind: expected HOST:PORT, got 'localhost'")


def test_missing_config_file(tmp_path: Path) -> None:
    result = amberio_cmd("server", "--config", "nope.yaml", cwd=tmp_path)
    assert_user_error(result, "nope.yaml: cannot read config file")


def test_embedded_init(tmp_path: Path) -> None:
    started = time.monotonic()
    result = amberio_cmd("serve", "--init", "--data-dir", "mydata", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    identity = json.loads((tmp_path / "mydata" / "amberio" / "identity.json").read_text())
    assert identity["node_id"] == "node-1" and identity["namespace"] == "default"
    assert (tmp_path / "mydata" / "amberio" / "registry.json").is_file()
    # log lines: one per event, with the node id
    assert "Traceback" not in result.stderr
    assert any(" INFO node=node-1 amberio." in line for line in result.stderr.splitlines())
    # the second --init is harmless, and $AMBERIO_DATA_DIR is the default data dir
    again = amberio_cmd("server", "--init", cwd=tmp_path, env={"AMBERIO_DATA_DIR": "mydata"})
    assert again.returncode == 0, again.stderr
    assert "already initialized" in again.stderr
    assert not (tmp_path / "amberio-data").exists()


def test_embedded_default_data_dir(tmp_path: Path) -> None:
    result = amberio_cmd("serve", "--init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "amberio-data" / "amberio" / "identity.json").is_file()


def test_embedded_wrong_node(tmp_path: Path) -> None:
    result = amberio_cmd("serve", "--init", "--current-node", "node-7", cwd=tmp_path)
    assert_user_error(result, "unknown node id 'node-7'")


def test_identity_of_other_namespace_refused(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    base = (
        "current_node: n1\n"
        "registry: {{backend: local, namespace: {ns}}}\n"
        "initial_cluster:\n"
        "  nodes: [{{node_id: n1, bind_addr: '127.0.0.1:19999', disks: [{{path: '{disk}'}}]}}]\n"
        "  replication: {{min_write_replicas: 1}}\n"
    )
    (tmp_path / "a.yaml").write_text(base.format(ns="alpha", disk=disk))
    assert amberio_cmd("server", "--config", "a.yaml", "--init", cwd=tmp_path).returncode == 0
    (tmp_path / "b.yaml").write_text(base.format(ns="beta", disk=disk))
    # the local registry file of "alpha" is on that disk: namespace mismatch is refused
    result = amberio_cmd("server", "--config", "b.yaml", "--init", cwd=tmp_path)
    assert_user_error(result, "alpha", "beta")


def test_help_lists_same_options_for_both_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve, server = sub.choices["serve"], sub.choices["server"]

    def options(p: Any) -> list[str]:
        return sorted(o for a in p._actions for o in a.option_strings)

    assert options(serve) == options(server)
    for flag in ("--config", "--current-node", "--init", "--data-dir", "--bind",
                 "--cluster-secret"):  # fmt: skip
        assert flag in options(serve)


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_load_cli_config_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    monkeypatch.delenv("AMBERIO_DATA_DIR", raising=False)
    monkeypatch.delenv("AMBERIO_CLUSTER_SECRET", raising=False)
    args = parser.parse_args(["serve", "--bind", "127.0.0.1:9", "--cluster-secret", "sh"])
    config = load_cli_config(args)
    assert config.cluster_secret == "sh"
    assert config.source == "<embedded default>"
    assert config.local_registry_disk("node-1") == "./amberio-data"
    monkeypatch.setenv("AMBERIO_CLUSTER_SECRET", "from-env")
    monkeypatch.setenv("AMBERIO_DATA_DIR", str(tmp_path / "env-dir"))
    config = load_cli_config(parser.parse_args(["server"]))
    assert config.cluster_secret == "from-env"
    assert config.local_registry_disk("node-1") == str(tmp_path / "env-dir")
    with pytest.raises(ConfigError):
        load_cli_config(parser.parse_args(["serve", "--config", "x.yaml", "--data-dir", "d"]))


def test_main_serve_calls_http_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []

    class FakeServer:
        @staticmethod
        def run(config: Any, *, current_node: str | None, bind_override: str | None) -> int:
            calls.append((config.source, current_node, bind_override))
            return 0

    real_import = importlib.import_module
    monkeypatch.setattr(
        importlib,
        "import_module",
        lambda name: FakeServer if name == "amberio.http.server" else real_import(name),
    )
    main(["serve", "--data-dir", str(tmp_path), "--bind", "127.0.0.1:9"])
    assert calls == [("<embedded default>", None, "127.0.0.1:9")]

    FakeServer.run = staticmethod(lambda *a, **k: 3)  # type: ignore[method-assign]
    with pytest.raises(SystemExit) as info:
        main(["server", "--data-dir", str(tmp_path)])
    assert info.value.code == 3


def test_main_maps_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def config_error(args: Any) -> int:
        raise ConfigError("somewhere:\n  two lines")

    monkeypatch.setattr(cli, "_run", config_error)
    with pytest.raises(SystemExit) as info:
        main(["serve"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "amberio: error: somewhere: two lines\n"

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    with pytest.raises(SystemExit) as info:
        main(["serve"])
    assert info.value.code == 0
    assert capsys.readouterr().err == ""


# --- logs --------------------------------------------------------------------------------


def capture_logging(env: dict[str, str], node: str | None = "node-3") -> io.StringIO:
    stream = io.StringIO()
    logs.setup_logging(node, env=env, stream=stream)
    return stream


def test_log_line_format() -> None:
    stream = capture_logging({})
    logging.getLogger("amberio.test").info("hello %s", "world")
    logging.getLogger("amberio.test").debug("hidden")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("amberio.test").exception("failed\nbadly")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    stamp, level, node, name, *rest = lines[0].split(" ")
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == 24
    assert (level, node, name, " ".join(rest)) == ("INFO", "node=node-3", "amberio.test:",
                                                   "hello world")  # fmt: skip
    assert " ERROR node=node-3 amberio.test: failed\\nbadly\\nTraceback" in lines[1]
    assert "ValueError: boom" in lines[1]


def test_log_levels_from_env() -> None:
    stream = capture_logging({"AMBERIO_LOG": "debug"})
    logging.getLogger("amberio.x").debug("dbg")
    assert "DEBUG" in stream.getvalue()

    stream = capture_logging({"AMBERIO_LOG": "warning"})
    logging.getLogger("amberio.x").info("quiet")
    logging.getLogger("amberio.x").warning("loud")
    assert "quiet" not in stream.getvalue() and "loud" in stream.getvalue()

    stream = capture_logging({"AMBERIO_LOG": "amberio=debug"})
    logging.getLogger("amberio.cluster").debug("targeted")
    logging.getLogger("other").debug("untargeted")
    assert "targeted" in stream.getvalue() and "untargeted" not in stream.getvalue()

    stream = capture_logging({"AMBERIO_LOG": "warn,amberio::http=debug"})
    logging.getLogger("amberio.http").debug("http-debug")
    logging.getLogger("amberio.cluster").info("cluster-info")
    assert "http-debug" in stream.getvalue() and "cluster-info" not in stream.getvalue()


def test_granian_quiet_and_bad_spec() -> None:
    stream = capture_logging({"AMBERIO_LOG": "info"}, node=None)
    logging.getLogger("granian").info("granian chatter")
    logging.getLogger("granian.access").info("access line")
    logging.getLogger("granian").warning("granian warning")
    out = stream.getvalue()
    assert "chatter" not in out and "access line" not in out and "granian warning" in out
    assert "node=-" in out

    stream = capture_logging({"AMBERIO_LOG": "granian=info"})
    logging.getLogger("granian").info("now visible")
    assert "now visible" in stream.getvalue()

    stream = capture_logging({"AMBERIO_LOG": "loud"})
    assert "unknown log level 'loud'" in stream.getvalue()
    logging.getLogger("amberio.x").info("still info")
    assert "still info" in stream.getvalue()


def test_set_node_id_and_single_handler() -> None:
    first = capture_logging({}, node=None)
    stream = capture_logging({}, node=None)  # idempotent: the first handler is replaced
    streams = [getattr(h, "stream", None) for h in logging.getLogger().handlers]
    assert first not in streams and streams.count(stream) == 1
    logs.set_node_id("node-9")
    logging.getLogger("amberio.x").info("after")
    assert "node=node-9" in stream.getvalue()


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name in ("amberio", "granian", "granian.access", "amberio.http", "other"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    logs.set_node_id(None)
