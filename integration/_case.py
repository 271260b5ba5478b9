"""One case run: `run_case` parses the flags, checks the environment, gives the case a `Case`
(temp folder, port allocator, clusters, soft checks), cleans up, and turns the outcome into the
exit status."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from _checks import CaseFailure, CaseSkipped, SetupError
from _cli import Options, parse_options, resolve_binary
from _cluster import Cluster, Node, PortAllocator
from _redis import check_redis, delete_namespace_keys

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_SKIP = 77  # automake's "skipped"; run_all.py counts it as skipped


class Case:
    def __init__(self, name: str, opts: Options, binary: Path, tmp: Path) -> None:
        self.name = name
        self.opts = opts
        self.binary = binary
        self.tmp = tmp
        self.ports = PortAllocator(opts.base_port)
        self.clusters: list[Cluster] = []
        self.namespaces: list[str] = []
        self.notes: list[str] = []
        self.failures: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)
        print(f"[{self.name}] note: {message}", flush=True)

    def expect(self, condition: bool, message: str) -> None:
        """A soft check: recorded, the case goes on, and fails at the end."""
        if not condition:
            self.failures.append(message)
            print(f"[{self.name}] CHECK FAILED: {message}", flush=True)

    def soft(self, label: str, block: Callable[[], object]) -> None:
        """Run an independent group of checks; its failure is recorded and the case goes on."""
        try:
            block()
        except CaseFailure as exc:
            self.expect(False, f"{label}: {exc}")

    def step(self, message: str) -> None:
        print(f"[{self.name}] {message}", flush=True)

    def cluster(
        self,
        label: str | None = None,
        *,
        nodes: int | None = None,
        min_write_replicas: int | None = None,
        total_slots: int | None = None,
        part_size: int | None = None,
        replicas: int | None = None,
        extra_config: Mapping[str, object] | None = None,
        start: bool = True,
    ) -> Cluster:
        """A cluster with the case's options unless overridden; started unless start=False."""
        cluster = Cluster(
            self,
            label or f"c{len(self.clusters) + 1}",
            nodes=nodes if nodes is not None else self.opts.nodes,
            min_write_replicas=(
                min_write_replicas
                if min_write_replicas is not None
                else self.opts.min_write_replicas
            ),
            total_slots=total_slots if total_slots is not None else self.opts.total_slots,
            part_size=part_size,
            replicas=replicas,
            extra_config=extra_config,
        )
        self.clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    def all_nodes(self) -> Iterator[Node]:
        for cluster in self.clusters:
            yield from cluster.nodes

    def print_logs(self) -> None:
        for node in self.all_nodes():
            print(
                f"----- tail of {node.cluster.label}/{node.node_id} log ({node.log_path}) -----",
                file=sys.stderr,
            )
            print(node.log_tail(), file=sys.stderr)

    def cleanup(self) -> None:
        for cluster in self.clusters:
            cluster.stop()
        for namespace in self.namespaces:
            with contextlib.suppress(Exception):
                delete_namespace_keys(self.opts.redis_url, namespace)
        if self.opts.keep_artifacts:
            print(f"[{self.name}] artifacts kept in {self.tmp}", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_case(
    main: Callable[[Case], None],
    *,
    defaults: Mapping[str, object] | None = None,
    description: str | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Run one case; 0 pass, 1 fail, 77 skipped. Use as `raise SystemExit(run_case(main))`."""
    source = inspect.getsourcefile(main) or sys.argv[0]
    name = Path(source).stem
    doc = description or (inspect.getmodule(main).__doc__ if inspect.getmodule(main) else None)
    opts = parse_options(
        argv,
        description=(doc or name).strip(),
        defaults=defaults or {},
        add_arguments=add_arguments,
    )
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    if opts.unknown:
        print(f"[{name}] note: ignoring arguments this case does not use: {opts.unknown}")
    started = time.monotonic()
    try:
        check_redis(opts.redis_url)
        binary = resolve_binary(opts)
    except SetupError as exc:
        print(f"FAIL {name}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAIL
    tmp = Path(tempfile.mkdtemp(prefix=f"amberio-it-{name[:3]}-"))
    case = Case(name, opts, binary, tmp)
    outcome = EXIT_FAIL
    try:
        main(case)
        if case.failures:
            count = len(case.failures)
            raise CaseFailure(f"{count} check(s) failed:\n  - " + "\n  - ".join(case.failures))
        outcome = EXIT_PASS
    except CaseSkipped as exc:
        print(f"SKIP {name}: {exc}", flush=True)
        outcome = EXIT_SKIP
    except CaseFailure as exc:
        print(f"FAIL {name}: {exc}", file=sys.stderr, flush=True)
        case.print_logs()
    except SetupError as exc:
        print(f"FAIL {name}: {exc}", file=sys.stderr, flush=True)
        case.print_logs()
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        traceback.print_exc()
        print(f"FAIL {name}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        case.print_logs()
    finally:
        case.cleanup()
    if outcome == EXIT_PASS:
        print(f"PASS {name} ({time.monotonic() - started:.1f}s)", flush=True)
    return outcome
