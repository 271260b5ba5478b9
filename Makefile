# Amberio developer commands. `make test` is the one test command (contract §15).

.PHONY: test serve integration lint wheel

# Everything: installs what is missing, builds, starts a private Redis, runs cargo test,
# clippy, ruff, mypy, pytest, the integration suite and the wheel check.
test:
	bash scripts/test.sh

# The embedded single-node server on 127.0.0.1:19080 (data in ./amberio-data).
serve:
	uv run amberio serve

# The integration suite alone; needs a Redis (AMBERIO_REDIS_URL, default redis://127.0.0.1:6379).
integration:
	uv run --project integration integration/run_all.py --build-if-missing

lint:
	uv run ruff check
	uv run mypy
	cargo clippy --workspace --all-targets -- -D warnings

wheel:
	uv run maturin build --release
