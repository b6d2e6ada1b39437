# The two commands of the README's Quick start. Each bootstraps uv when it is missing
# (a fresh machine needs only Python 3.11+, pip and make).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: demo test lint bench uv

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

demo: uv
	$(UV) sync --frozen --quiet
	$(UV) run tcscale demo

test: uv
	$(UV) sync --frozen --quiet
	$(UV) run ruff check .
	$(UV) run pytest

bench: uv
	$(UV) sync --frozen --quiet
	$(UV) run python -m bench.api
	$(UV) run python -m bench.dataplane
	$(UV) run python -m bench.scale_out
	$(UV) run python -m bench.rewrite
	$(UV) run python -m bench.autoscaling
