"""Running the `amberio` command in a subprocess, shared by the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import amberio.cli

PYTHON_DIR = str(Path(amberio.cli.__file__).resolve().parents[1])


def amberio_cmd(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`python -m amberio ...` in a subprocess, importing this checkout's package."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [PYTHON_DIR, *filter(None, [full_env.get("PYTHONPATH")])]
    )
    full_env.pop("AMBERIO_DATA_DIR", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "amberio", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *mentions: str) -> str:
    """Exit status 2 and exactly one `amberio: error: ...` line naming each of `mentions`."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("amberio: error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for mention in mentions:
        assert mention in lines[0], (mention, lines[0])
    return lines[0]
