"""The `amberio` command (contract §1): `amberio serve|server [options]`.

User errors (bad config, unknown node, unreachable registry at init) print exactly one line
`amberio: error: <message>` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from amberio.config import DEFAULT_DATA_DIR, Config, embedded_config, load_config
from amberio.errors import ConfigError
from amberio.logs import set_node_id, setup_logging

PROG: Final = "amberio"
EXIT_USAGE: Final = 2
DATA_DIR_ENV: Final = "AMBERIO_DATA_DIR"
SECRET_ENV: Final = "AMBERIO_CLUSTER_SECRET"

if TYPE_CHECKING:
    from amberio.cluster.bootstrap import Runtime

log = logging.getLogger("amberio.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Amberio object store: native blob API and S3 endpoint."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in (
        ("serve", "run a node (initializing it first if needed)"),
        ("server", "same as serve"),
    ):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument(
            "--config", metavar="PATH", help="cluster config file (YAML); default: embedded"
        )
        cmd.add_argument(
            "--current-node", metavar="NODE_ID", help="this node's id (overrides current_node)"
        )
        cmd.add_argument(
            "--init", action="store_true", help="initialize this node, then exit without serving"
        )
        cmd.add_argument(
            "--data-dir",
            metavar="DIR",
            help=f"data dir of the embedded single node (default ${DATA_DIR_ENV} or "
            f"{DEFAULT_DATA_DIR}); not with --config",
        )
        cmd.add_argument(
            "--bind", metavar="HOST:PORT", help="listen address (default from the cluster state)"
        )
        cmd.add_argument(
            "--cluster-secret",
            metavar="SECRET",
            help=f"secret signing the internal API, stored at init (or ${SECRET_ENV})",
        )
    return parser


def load_cli_config(args: argparse.Namespace) -> Config:
    """The Config the flags describe (file or embedded default, plus overrides)."""
    if args.config is not None:
        if args.data_dir is not None:
            raise ConfigError(
                "--data-dir cannot be combined with --config (disks come from the config file)"
            )
        config = load_config(args.config)
    else:
        data_dir = args.data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
        config = embedded_config(data_dir, args.bind)
    secret = args.cluster_secret or os.environ.get(SECRET_ENV) or None
    if secret is not None:
        config = config.replace(cluster_secret=secret)
    return config


async def _init(config: Config, current_node: str | None, bind: str | None) -> None:
    from amberio.cluster.bootstrap import bootstrap

    runtime = await bootstrap(config, current_node=current_node, init_only=True, bind_override=bind)
    try:
        await init_scan(runtime)
    finally:
        await runtime.close()


async def init_scan(runtime: Runtime) -> None:
    """The archive import of §10.4 (init_scan in the local config), for this node's slots."""
    from amberio.storage.init_scan import run_init_scan

    placement = runtime.placement
    await run_init_scan(
        runtime.config.init_scan,
        disks=runtime.node.disks,
        slot_of=placement.slot_of,
        holds=lambda slot_id: placement.holds(runtime.node_id, slot_id),
        part_size=runtime.state.replication.part_size,
        archive=runtime.state.archive_config() or runtime.config.archive,
    )


def _run(args: argparse.Namespace) -> int:
    setup_logging(args.current_node)
    config = load_cli_config(args)
    set_node_id(args.current_node or config.current_node)
    if args.init:
        asyncio.run(_init(config, args.current_node, args.bind))
        return 0
    # Imported late (and by name) so that config errors never need the HTTP stack.
    server = importlib.import_module("amberio.http.server")
    run: Callable[..., int] = server.run
    return run(config, current_node=args.current_node, bind_override=args.bind)


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "configuration error"


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point. Exits via SystemExit for a non-zero status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = _run(args)
    except ConfigError as exc:
        sys.stderr.write(f"{PROG}: error: {_one_line(str(exc))}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        raise SystemExit(0) from None
    if code:
        raise SystemExit(code)
