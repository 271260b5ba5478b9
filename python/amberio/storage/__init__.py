"""Local storage: slot directories, per-slot SQLite metadata, part files (contract §5)."""
