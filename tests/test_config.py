from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from amberio.config import (
    Config,
    config_from_data,
    embedded_config,
    load_config,
    parse_host_port,
)
from amberio.errors import ConfigError

# The example of contract §2, verbatim in shape.
FULL_EXAMPLE = """\
current_node: node-1            # optional if --current-node is given

registry:
  backend: redis                # redis | local   (etcd: later)
  namespace: local-cluster-001  # isolates clusters sharing one Redis
  redis:
    url: "redis://127.0.0.1:6379"
    pool_size: 10

initial_cluster:                # read only by the init that wins (§3)
  nodes:
    - node_id: "node-1"
      bind_addr: "127.0.0.1:19080"
      advertise_addr: "127.0.0.1:19080"
      disks:
        - path: demo/node1/disk
  replication:
    min_write_replicas: 1       # W
    total_slots: 2048
    # replicas: 3               # optional, default min(3, node count)
    # part_size: 8388608        # optional; bytes per part

archive:                        # optional cold tier (§10)
  archive_type: s3              # s3 | redis
  # layout: mirror              # mirror | versioned (§10.1)
  s3:
    bucket: "amberio-archive"
    region: "us-east-1"
    endpoint: "http://127.0.0.1:8333"   # optional, S3-compatible servers
    allow_http: true
    credentials:
      access_key_id: "AKEXAMPLE"
      secret_access_key: "archive-secret-value"
  redis:
    url: "redis://127.0.0.1:6379"
    key_prefix: "amberio:archive"

s3:                             # optional S3 gateway settings (§11)
  credentials:                  # none: unsigned requests accepted (warning at start)
    - access_key_id: "GATEWAYKEY"
      secret_access_key: "gateway-secret-value"

cluster_secret: "cluster-secret-value"

read_consistency: quorum        # quorum | local (§6)

cache:                          # optional local capacity (§10.3)
  max_bytes: 107374182400       # per disk; evicts archived parts, least recently read first

anti_entropy:                   # optional (§9)
  interval_seconds: 300
  gc_grace_seconds: 86400

init_scan:                      # optional import at init (§10.4)
  enabled: true
  redis:
    url: "redis://127.0.0.1:6379"
    list_key: "amberio:init-scan:list"
    page_size: 500
"""

MINIMAL_CLUSTER: dict[str, Any] = {
    "registry": {"backend": "redis", "namespace": "ns", "redis": {"url": "redis://h:6379"}},
    "initial_cluster": {
        "nodes": [
            {"node_id": "node-1", "bind_addr": "127.0.0.1:1", "disks": [{"path": "d1"}]},
            {"node_id": "node-2", "bind_addr": "127.0.0.1:2", "disks": [{"path": "d2"}]},
        ],
        "replication": {"min_write_replicas": 2},
    },
}


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_data(tmp_path: Path, data: dict[str, Any]) -> Config:
    return load_config(write(tmp_path, yaml.safe_dump(data)))


def error_of(tmp_path: Path, data: dict[str, Any] | str, *, initial: bool = False) -> str:
    path = write(tmp_path, data if isinstance(data, str) else yaml.safe_dump(data), "bad.yaml")
    with pytest.raises(ConfigError) as info:
        config = load_config(path)
        if initial:
            config.parse_initial_cluster()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def with_changes(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(MINIMAL_CLUSTER))
    for dotted, value in changes.items():
        target: Any = data
        keys = dotted.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return data


_DELETE = object()


# --- the full example ---------------------------------------------------------------------


def test_full_example_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_EXAMPLE))
    assert config.source == str(tmp_path / "cfg.yaml")
    assert config.current_node == "node-1"
    assert config.registry.backend == "redis"
    assert config.registry.namespace == "local-cluster-001"
    assert config.registry.redis is not None
    assert config.registry.redis.url == "redis://127.0.0.1:6379"
    assert config.registry.redis.pool_size == 10
    ic = config.parse_initial_cluster()
    assert [n.node_id for n in ic.nodes] == ["node-1"]
    assert ic.nodes[0].disks[0].path == "demo/node1/disk"
    assert ic.replication.min_write_replicas == 1
    assert ic.replication.replicas is None
    assert ic.replication.effective_replicas(1) == 1
    assert ic.replication.part_size == 8388608
    assert config.archive is not None
    assert config.archive.archive_type == "s3"
    assert config.archive.effective_layout == "mirror"
    assert config.archive.s3 is not None and config.archive.s3.allow_http
    assert config.archive.s3.credentials is not None
    assert config.archive.redis is not None
    assert config.archive.redis.key_prefix == "amberio:archive"
    assert config.s3 is not None and config.s3.credentials[0].access_key_id == "GATEWAYKEY"
    assert config.cluster_secret == "cluster-secret-value"
    assert config.read_consistency == "quorum"
    assert config.cache is not None and config.cache.max_bytes == 107374182400
    assert config.anti_entropy.interval_seconds == 300
    assert config.anti_entropy.gc_grace_seconds == 86400
    assert config.init_scan is not None and config.init_scan.enabled
    assert config.init_scan.redis is not None and config.init_scan.redis.page_size == 500
    # secrets stay out of reprs
    text = repr(config) + repr(config.archive) + repr(config.s3)
    for secret in ("cluster-secret-value", "archive-secret-value", "gateway-secret-value"):
        assert secret not in text


def test_defaults(tmp_path: Path) -> None:
    config = load_data(
        tmp_path,
        {
            "registry": {"backend": "redis", "redis": {"url": "redis://h"}},
            "initial_cluster": {
                "nodes": [{"node_id": "a", "bind_addr": "h:1", "disks": [{"path": "/d"}]}],
                "replication": {"min_write_replicas": 1},
            },
            "archive": {"archive_type": "redis", "redis": {"url": "redis://h"}},
            "init_scan": {"redis": {"url": "redis://h"}},
        },
    )
    assert config.current_node is None
    assert config.registry.namespace == "default"
    assert config.registry.redis is not None and config.registry.redis.pool_size == 10
    ic = config.parse_initial_cluster()
    assert ic.replication.total_slots == 2048
    assert ic.replication.part_size == 8388608
    assert ic.nodes[0].advertise_addr is None
    assert ic.nodes[0].effective_advertise_addr == "h:1"
    assert config.read_consistency == "quorum"
    assert config.anti_entropy.interval_seconds == 300
    assert config.anti_entropy.gc_grace_seconds == 86400
    assert config.archive is not None and config.archive.effective_layout == "versioned"
    assert config.archive.redis is not None
    assert config.archive.redis.key_prefix == "amberio:archive"
    assert config.init_scan is not None and config.init_scan.enabled
    assert config.init_scan.redis is not None
    assert config.init_scan.redis.page_size == 500
    assert config.init_scan.redis.list_key == "amberio:init-scan:list"
    assert config.s3 is None and config.cache is None and config.cluster_secret is None
    # The optional `peers` section (an extension of §2): today's constants.
    assert config.peers.connect_timeout_seconds == 2.0
    assert config.peers.request_timeout_seconds == 5.0
    assert config.peers.retries == 1
    assert config.peers.slow_peer_grace_seconds == 0.5
    assert config.peers.part_timeout_seconds == 120.0


def test_replicas_default_min_3_n(tmp_path: Path) -> None:
    nodes = [
        {"node_id": f"n{i}", "bind_addr": f"h:{i}", "disks": [{"path": f"/d{i}"}]}
        for i in range(1, 6)
    ]
    for count, expected in ((1, 1), (2, 2), (3, 3), (5, 3)):
        data = with_changes(
            initial_cluster__nodes=nodes[:count],
            initial_cluster__replication={"min_write_replicas": 1},
        )
        rep = load_data(tmp_path, data).parse_initial_cluster().replication
        assert rep.effective_replicas(count) == expected


def test_peers_section(tmp_path: Path) -> None:
    peers = {
        "connect_timeout_seconds": 0.5,
        "request_timeout_seconds": 1.5,
        "retries": 0,
        "slow_peer_grace_seconds": 0,
        "part_timeout_seconds": 30,
    }
    config = load_data(tmp_path, with_changes(peers=peers))
    assert config.peers.connect_timeout_seconds == 0.5
    assert config.peers.request_timeout_seconds == 1.5
    assert config.peers.retries == 0
    assert config.peers.slow_peer_grace_seconds == 0.0
    assert config.peers.part_timeout_seconds == 30.0
    partial = load_data(tmp_path, with_changes(peers={"request_timeout_seconds": 3}))
    assert partial.peers.request_timeout_seconds == 3.0
    assert partial.peers.connect_timeout_seconds == 2.0
    message = error_of(tmp_path, with_changes(peers={"read_timeout": 3}))
    assert message == "peers.read_timeout: unknown key"
    message = error_of(tmp_path, with_changes(peers={"request_timeout_seconds": "fast"}))
    assert message.startswith("peers.request_timeout_seconds: expected float, got str")
    message = error_of(tmp_path, with_changes(peers={"request_timeout_seconds": 0}))
    assert message.startswith("peers.request_timeout_seconds: expected float > 0")
    message = error_of(tmp_path, with_changes(peers={"retries": -1}))
    assert message.startswith("peers.retries: expected int >= 0")
    assert error_of(tmp_path, with_changes(peers=[1])).startswith(
        "peers: expected mapping, got list"
    )


# --- errors naming the key path ----------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert error_of(tmp_path, with_changes(colour="blue")) == "colour: unknown top-level key"


def test_unknown_nested_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_changes(registry__redis__timeout=3))
    assert message == "registry.redis.timeout: unknown key"
    message = error_of(tmp_path, with_changes(initial_cluster__nodes__1__zone="a"), initial=True)
    assert message == "initial_cluster.nodes[1].zone: unknown key"


def test_wrong_type_names_path(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, with_changes(initial_cluster__nodes__1__bind_addr=19080), initial=True
    )
    assert message.startswith("initial_cluster.nodes[1].bind_addr: expected str, got int")
    assert "19080" in message
    message = error_of(tmp_path, with_changes(registry__redis__pool_size="ten"))
    assert message.startswith("registry.redis.pool_size: expected int, got str")
    message = error_of(tmp_path, with_changes(read_consistency=["quorum"]))
    assert message.startswith("read_consistency: expected str, got list")
    message = error_of(tmp_path, with_changes(registry=["redis"]))
    assert message.startswith("registry: expected mapping, got list")


def test_missing_required(tmp_path: Path) -> None:
    assert error_of(tmp_path, with_changes(registry=_DELETE)) == "registry: missing required key"
    message = error_of(tmp_path, with_changes(registry__backend=_DELETE))
    assert message == "registry.backend: missing required key"
    message = error_of(tmp_path, with_changes(registry__redis__url=_DELETE))
    assert message == "registry.redis.url: missing required key"
    message = error_of(
        tmp_path, with_changes(initial_cluster__nodes__0__disks=_DELETE), initial=True
    )
    assert message == "initial_cluster.nodes[0].disks: missing required key"
    message = error_of(
        tmp_path, with_changes(initial_cluster__replication__min_write_replicas=_DELETE),
        initial=True,
    )  # fmt: skip
    assert message == "initial_cluster.replication.min_write_replicas: missing required key"
    message = error_of(tmp_path, with_changes(initial_cluster=_DELETE), initial=True)
    assert message.startswith("initial_cluster: missing; it is required to initialize")


def test_unknown_backend_and_enums(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_changes(registry__backend="etcd"))
    assert message == "registry.backend: unknown value 'etcd' (expected one of: redis, local)"
    message = error_of(tmp_path, with_changes(archive={"archive_type": "gcs"}))
    assert message == "archive.archive_type: unknown value 'gcs' (expected one of: s3, redis)"
    message = error_of(tmp_path, with_changes(read_consistency="one"))
    assert message.startswith("read_consistency: unknown value 'one'")
    message = error_of(
        tmp_path,
        with_changes(archive={"archive_type": "s3", "layout": "flat", "s3": {"bucket": "b"}}),
    )
    assert message.startswith("archive.layout: unknown value 'flat'")


def test_section_required_by_backend(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_changes(registry__redis=_DELETE))
    assert message == "registry.redis: required when registry.backend is redis"
    message = error_of(tmp_path, with_changes(archive={"archive_type": "s3"}))
    assert message == "archive.s3: required when archive.archive_type is s3"
    message = error_of(tmp_path, with_changes(archive={"archive_type": "redis"}))
    assert message == "archive.redis: required when archive.archive_type is redis"
    message = error_of(tmp_path, with_changes(init_scan={"enabled": True}))
    assert message.startswith("init_scan: enabled, but neither")
    message = error_of(tmp_path, with_changes(registry__redis__url="http://h:1"))
    assert message.startswith("registry.redis.url: expected a redis://")
    message = error_of(
        tmp_path,
        with_changes(archive={"archive_type": "s3", "s3": {"bucket": "b", "endpoint": "http://x"}}),
    )
    assert message.startswith("archive.s3.allow_http: must be true")


def test_bad_values(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (with_changes(registry__redis__pool_size=0), "registry.redis.pool_size: expected int >= 1"),
        (with_changes(registry__namespace="has space"), "registry.namespace: invalid namespace"),
        (with_changes(registry__namespace=""), "registry.namespace: expected str of length >= 1"),
        (with_changes(current_node="bad id!"), "current_node: invalid node id"),
        (with_changes(cluster_secret=""), "cluster_secret: must not be empty"),
        (with_changes(anti_entropy={"interval_seconds": 0}),
         "anti_entropy.interval_seconds: expected float > 0.0"),
        (with_changes(cache={"max_bytes": -1}), "cache.max_bytes: expected int >= 0"),
        (with_changes(s3={"credentials": [{"access_key_id": "k", "secret_access_key": "a"},
                                          {"access_key_id": "k", "secret_access_key": "b"}]}),
         "s3.credentials[1].access_key_id: duplicate access key id 'k'"),
    ]  # fmt: skip
    for data, expected in cases:
        assert error_of(tmp_path, data).startswith(expected), expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"initial_cluster__nodes__1__node_id": "node-1"},
         "initial_cluster.nodes[1].node_id: duplicate node id 'node-1'"),
        ({"initial_cluster__nodes__0__node_id": "no/slash"},
         "initial_cluster.nodes[0].node_id: invalid node id"),
        ({"initial_cluster__nodes__1__bind_addr": "localhost"},
         "initial_cluster.nodes[1].bind_addr: expected HOST:PORT, got 'localhost'"),
        ({"initial_cluster__nodes__1__bind_addr": "127.0.0.1:99999"},
         "initial_cluster.nodes[1].bind_addr: invalid port"),
        ({"initial_cluster__nodes__1__bind_addr": "127.0.0.1:http"},
         "initial_cluster.nodes[1].bind_addr: invalid port"),
        ({"initial_cluster__nodes__0__bind_addr": "::1:80"},
         "initial_cluster.nodes[0].bind_addr: IPv6 addresses need brackets"),
        ({"initial_cluster__nodes__0__bind_addr": "bad_host!:80"},
         "initial_cluster.nodes[0].bind_addr: invalid host"),
        ({"initial_cluster__nodes__0__advertise_addr": "nope"},
         "initial_cluster.nodes[0].advertise_addr: expected HOST:PORT"),
        ({"initial_cluster__nodes__0__bind_addr": "0.0.0.0:1"},
         "initial_cluster.nodes[0].advertise_addr: required when bind_addr is a wildcard"),
        ({"initial_cluster__nodes__1__advertise_addr": "127.0.0.1:1"},
         "initial_cluster.nodes[1].advertise_addr: duplicate address '127.0.0.1:1'"),
        ({"initial_cluster__nodes__0__disks": []},
         "initial_cluster.nodes[0].disks: must list at least one disk"),
        ({"initial_cluster__nodes__0__disks": [{"path": "a"}, {"path": "./a"}]},
         "initial_cluster.nodes[0].disks[1].path: duplicate disk"),
        ({"initial_cluster__nodes": []}, "initial_cluster.nodes: must list at least one node"),
        ({"initial_cluster__replication__min_write_replicas": 3},
         "initial_cluster.replication.min_write_replicas: 3 exceeds the replica count 2"),
        ({"initial_cluster__replication__part_size": 1000},
         "initial_cluster.replication.part_size: expected int >= 65536"),
        ({"initial_cluster__replication__total_slots": 0},
         "initial_cluster.replication.total_slots: expected int >= 1"),
        ({"initial_cluster__replication__replicas": 0},
         "initial_cluster.replication.replicas: expected int >= 1"),
        ({"initial_cluster": "nonsense"}, "initial_cluster: expected mapping, got str"),
    ],
)  # fmt: skip
def test_initial_cluster_errors(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    data = with_changes(**changes)
    # the file itself loads: initial_cluster is validated only when used
    load_data(tmp_path, data)
    message = error_of(tmp_path, data, initial=True)
    assert message.startswith(expected), message


def test_bad_yaml(tmp_path: Path) -> None:
    message = error_of(tmp_path, "registry:\n  backend: [redis\n")
    assert message.startswith("invalid YAML: line ")
    message = error_of(tmp_path, "registry: {backend: local}\nregistry: {backend: redis}\n")
    assert message == "invalid YAML: line 2, column 1: duplicate key 'registry'"
    assert error_of(tmp_path, "") == "the config file is empty"
    assert error_of(tmp_path, "# only a comment\n") == "the config file is empty"
    message = error_of(tmp_path, "- a\n- b\n")
    assert message == "expected a mapping of keys at the top level, got a list"
    message = error_of(tmp_path, "1: x\nregistry: {backend: local}\n")
    assert message == "mapping keys must be strings"
    message = error_of(tmp_path, "registry: a: b\n")
    assert message == "invalid YAML: line 1, column 12: mapping values are not allowed here"


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = """\
    registry:
      <<: {backend: local, namespace: a}
      namespace: b
    """
    config = load_config(write(tmp_path, text))
    assert config.registry.namespace == "b"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)


def test_secret_values_not_echoed(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_changes(cluster_secret=123456789))
    assert message.startswith("cluster_secret: expected str, got int")
    assert "123456789" not in message
    message = error_of(
        tmp_path,
        with_changes(s3={"credentials": [{"access_key_id": "k", "secret_access_key": 987654321}]}),
    )
    assert "987654321" not in message


# --- initial_cluster kept raw; lenient lookups ------------------------------------------------


def test_initial_cluster_raw_and_lenient(tmp_path: Path) -> None:
    data = with_changes(initial_cluster={"nodes": [
        {"node_id": "node-1", "disks": [{"path": "/x"}, 7], "bind_addr": 5},
        "junk",
    ], "replication": "junk"})  # fmt: skip
    config = load_data(tmp_path, data)
    assert config.raw_node_disks("node-1") == ["/x"]
    assert config.raw_node_disks("node-2") is None
    assert config.local_registry_disk("node-1") == "/x"
    with pytest.raises(ConfigError, match=r"initial_cluster.nodes: unknown node id 'node-2'"):
        config.local_registry_disk("node-2")
    with pytest.raises(ConfigError, match=r"initial_cluster.nodes\[0\].bind_addr"):
        config.parse_initial_cluster()
    nothing = load_data(tmp_path, with_changes(initial_cluster=_DELETE))
    with pytest.raises(ConfigError, match=r"initial_cluster.nodes: required with registry"):
        nothing.local_registry_disk("node-1")


def test_replace_keeps_source(tmp_path: Path) -> None:
    config = load_data(tmp_path, MINIMAL_CLUSTER)
    changed = config.replace(cluster_secret="s")
    assert changed.cluster_secret == "s" and config.cluster_secret is None
    assert changed.source == config.source


def test_config_from_data_source() -> None:
    config = config_from_data(MINIMAL_CLUSTER, source="inline")
    assert config.source == "inline"
    with pytest.raises(ConfigError, match=r"^inline: registry.backend: unknown value"):
        config_from_data({"registry": {"backend": "x"}}, source="inline")


# --- embedded default ----------------------------------------------------------------------


def test_embedded_config() -> None:
    config = embedded_config("/srv/data")
    assert config.source == "<embedded default>"
    assert config.current_node == "node-1"
    assert config.registry.backend == "local"
    assert config.registry.namespace == "default"
    ic = config.parse_initial_cluster()
    assert len(ic.nodes) == 1
    node = ic.nodes[0]
    assert (node.node_id, node.bind_addr, node.effective_advertise_addr) == (
        "node-1",
        "127.0.0.1:19080",
        "127.0.0.1:19080",
    )
    assert [d.path for d in node.disks] == ["/srv/data"]
    assert ic.replication.min_write_replicas == 1
    assert config.local_registry_disk("node-1") == "/srv/data"


def test_embedded_config_bind() -> None:
    ic = embedded_config("d", "0.0.0.0:9000").parse_initial_cluster()
    assert ic.nodes[0].bind_addr == "0.0.0.0:9000"
    assert ic.nodes[0].effective_advertise_addr == "127.0.0.1:9000"
    with pytest.raises(ConfigError, match=r"^--bind: expected HOST:PORT, got 'nope'"):
        embedded_config("d", "nope")
    with pytest.raises(ConfigError, match="--data-dir"):
        embedded_config("")


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:19080") == ("127.0.0.1", 19080)
    assert parse_host_port("localhost:1") == ("localhost", 1)
    assert parse_host_port("node-1.example.com:443") == ("node-1.example.com", 443)
    assert parse_host_port("[::1]:8080") == ("::1", 8080)
    assert parse_host_port("0.0.0.0:65535") == ("0.0.0.0", 65535)
    for bad in ("", "host", ":80", "host:", "host:0", "host:65536", "[::1]80", "[zz]:1",
                "a b:1", "::1:80", "host:-1"):  # fmt: skip
        with pytest.raises(ValueError):
            parse_host_port(bad)
