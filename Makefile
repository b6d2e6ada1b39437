# The two commands of the README's Quick start. Each bootstraps uv when it is missing
# (a fresh machine needs only Python 3.11+, pip and make).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# --compile-bytecode: every Python process (Prefect server, workers, serve, the bridge) starts from compiled
# modules even where PYTHONDONTWRITEBYTECODE is set (measured: ~11 s of CPU per process start without). uv compiles
# only what it installs; our own packages run from the source tree, so compileall does them (~0.4 s of CPU saved
# per process start: the test suite starts a few hundred).
SOURCES := flows tasks deployments chatops cli devstack sandbox tests bench
SYNC = $(UV) sync --frozen --quiet --compile-bytecode && $(UV) run python -m compileall -q -j 0 $(SOURCES) >/dev/null

# pytest-xdist workers. Each runs its own sandbox and Prefect test server (~10 s of CPU to start). On 2 cores 4 beat
# 3 (clean clone, fresh TMPDIR: 331-343 s against 381-394 s): the first ~3 minutes are CPU-bound, the rest mostly
# waits on processes and clocks. The tests of one expensive stack share a worker (--dist loadgroup), which starts
# that stack once. TEST_WORKERS=N make test to change it.
TEST_WORKERS ?= 4
# The default run's selection (pyproject's addopts) narrowed to the cheap tests: no Prefect, no whole flows.
CHECK_MARKERS := (unit or sandbox) and not slow and not tccli

.PHONY: demo test check lint bench rehearse uv chromium up

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

# The browser test drives Debian's chromium (never a downloaded browser): installed here when missing.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else \
		echo "chromium: /usr/bin/chromium is missing; install Debian's package as root: apt-get install chromium" >&2; \
		exit 1; \
	fi

up: uv
	$(SYNC)
	$(UV) run tcscale up

demo: uv
	$(SYNC)
	$(UV) run tcscale demo

test: uv
	@$(MAKE) --no-print-directory chromium || echo "test: no chromium here: the browser test skips (CI=true fails it)" >&2
	$(SYNC)
	$(UV) run ruff check .
	$(UV) run pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

# The inner loop: ruff, then the unit and sandbox tests (no Prefect, no whole flows, no stacks).
check: uv
	$(SYNC)
	$(UV) run ruff check .
	$(UV) run pytest -n $(TEST_WORKERS) --dist loadgroup -m "$(CHECK_MARKERS)"

bench: uv
	$(SYNC)
	$(UV) run python -m bench.api
	$(UV) run python -m bench.dataplane
	$(UV) run python -m bench.scale_out
	$(UV) run python -m bench.rewrite
	$(UV) run python -m bench.autoscaling
	$(UV) run python -m bench.chatops
	$(UV) run python -m bench.forecast_methods
	$(UV) run python -m bench.capacity_replay
	$(UV) run python -m bench.chart

# The team's setup on one machine: PostgreSQL + Redis, two authenticated Prefect servers behind a round-robin (one
# killed mid-run), two workers, ten chat commands (docs/team-setup.md).
rehearse: uv
	$(SYNC)
	$(UV) run python -m devstack.rehearsal
