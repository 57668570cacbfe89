# Two commands for a fresh clone: `make run` and `make test`.
# Both make .venv, install the pinned requirements, and find or start a real
# Redis (see devtools/with_redis.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test setup lint format bench bench-dashboard bench-dashboard-cost bench-topologies clean

$(INSTALLED): requirements.txt requirements-dev.txt
	@echo "[make] setting up .venv: installing the pinned Python packages (about 1-2 minutes the first time, then only when requirements change)" >&2
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(INSTALLED)
	@echo "[make] .venv is ready" >&2

setup: $(INSTALLED)

# Quiet set-up steps: once the service runs, stdout is its JSON log lines only.
run: setup
	@echo "[make run] migrating the database and collecting static files" >&2
	@$(BIN)/python manage.py migrate --noinput --verbosity 0
	@$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "[make run] the demo player is at http://localhost:$${PORT:-8080}/demo/ (STREAMLIMIT_DEMO=false turns it off)" >&2
	@# Without keys of your own, the demo gets a development key (var/dev_token_key) and tokens are
	@# optional: the demo's tokens show an account's screens, and requests without a token still work.
	@export STREAMLIMIT_DEMO=$${STREAMLIMIT_DEMO:-true}; \
	if [ "$$STREAMLIMIT_DEMO" = true ] && [ -z "$$PLAYBACK_TOKEN_KEYS$$PLAYBACK_TOKEN_JWKS_FILE" ]; then \
	  export PLAYBACK_TOKEN_KEYS="$$($(BIN)/python -m devtools.dev_token_key)" PLAYBACK_TOKENS_REQUIRED=false; \
	  echo "[make run] playback tokens: a development key for the demo, optional for other requests" >&2; \
	fi; \
	exec $(BIN)/python -m devtools.with_redis $(BIN)/gunicorn --config gunicorn.conf.py streamlimit.wsgi:application

# The suite mostly waits (servers, failovers, browsers): more processes than cores pay. TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 4
test: setup
	bash devtools/install_chromium.sh
	bash devtools/install_deploy_tools.sh
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python -m devtools.with_redis $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python -m devtools.with_redis bash bench/run.sh

bench-dashboard: setup
	$(BIN)/python -m devtools.with_redis $(BIN)/python bench/dashboard_pages.py 100000

# Starts a redis-server of its own (1,000,000 live sessions); the shared one is never touched.
bench-dashboard-cost: setup
	$(BIN)/python -m bench.dashboard_cost $(ARGS)

# One Redis against a Cluster, admissions per shard, memory, WAIT: redis-servers of its own (never the shared one).
bench-topologies: setup
	$(BIN)/python -m bench.topologies $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache test-output
