"""`python -m amberio` is the `amberio` command."""

from __future__ import annotations

from amberio.cli import main

if __name__ == "__main__":
    main()
