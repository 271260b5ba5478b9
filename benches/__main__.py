"""Entry point: `python -m benches`."""

from __future__ import annotations

from benches.cli import main

raise SystemExit(main())
