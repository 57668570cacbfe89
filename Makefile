# Two commands for a fresh clone: `make run` and `make test`.
# Both make .venv, install the pinned requirements, and find or start a real
# Redis (see devtools/with_redis.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test setup lint format docs docs-check mutants bench bench-dashboard bench-dashboard-cost bench-topologies bench-players bench-webhooks clean

$(INSTALLED): requirements.txt requirements-dev.txt
	@echo "[make] setting up .venv: installing the pinned Python packages (about 1-2 minutes the first time, then only when requirements change)" >&2
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(INSTALLED)
	@echo "[make] .venv is ready" >&2

setup: $(INSTALLED)

# Quiet set-up steps: once the service runs, stdout is its JSON log lines only.
run: setup
	@# A second `make run` (or anything else on the port) stops here, with one line, before any set-up.
	@$(BIN)/python -m devtools.port_check
	@echo "[make run] collecting static files and migrating the database" >&2
	@# Static files first, without the checks: else a fresh clone's first run warns (twice) that they are not
	@# collected, the one thing this step is about to do (streamlimit/static_check.py); migrate then checks all.
	@$(BIN)/python manage.py collectstatic --noinput --verbosity 0 --skip-checks
	@$(BIN)/python manage.py migrate --noinput --verbosity 0
	@# Without keys of your own, a development key (var/dev_token_key) and tokens are optional: the
	@# demo's tokens show an account's screens, and requests without a token still work. (gunicorn
	@# refuses to start without keys unless PLAYER_AUTH=anonymous: streamlimit/player_auth.py.)
	@# The case accepts what the service's own STREAMLIMIT_DEMO check accepts as true (streamlimit/env.py).
	@export STREAMLIMIT_DEMO=$${STREAMLIMIT_DEMO:-true}; \
	case "$$STREAMLIMIT_DEMO" in [Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss]|[Oo][Nn]) demo=on ;; *) demo=off ;; esac; \
	echo "[make run] serving on http://localhost:$${PORT:-8080}/ (that page links the dashboard, the API docs and the probes)" >&2; \
	if [ "$$demo" = on ]; then \
	  echo "[make run] the demo player is at http://localhost:$${PORT:-8080}/demo/ (STREAMLIMIT_DEMO=false turns it off)" >&2; \
	fi; \
	if [ -z "$$PLAYBACK_TOKEN_KEYS$$PLAYBACK_TOKEN_JWKS_FILE" ] && [ "$$PLAYER_AUTH" != anonymous ]; then \
	  export PLAYBACK_TOKEN_KEYS="$$($(BIN)/python -m devtools.dev_token_key)" PLAYBACK_TOKENS_REQUIRED=false; \
	  echo "[make run] playback tokens: a development key, optional for requests without a token" >&2; \
	  echo "[make run] to run manage.py issue_token in another shell: export PLAYBACK_TOKEN_KEYS=$$PLAYBACK_TOKEN_KEYS" >&2; \
	fi; \
	exec $(BIN)/python -m devtools.with_redis $(BIN)/gunicorn --config gunicorn.conf.py streamlimit.wsgi:application

# Four pytest-xdist processes on 2 cores: the suite mostly waits (servers, failovers, browsers), and each
# worker has its own shared Sentinel set and Cluster, ports and output folder (docs/developers/tests.md).
# The slow tests are collected first (tests/conftest.py), and `--dist load` spreads them over the workers
# at once. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 4
test: setup lint docs-check
	bash devtools/install_chromium.sh
	bash devtools/install_deploy_tools.sh
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python -m devtools.with_redis $(BIN)/python -m devtools.with_postgres $(BIN)/pytest -n $(TEST_WORKERS) --dist load

# Style, and the layer rules of heartbeat/ (pyproject.toml's [tool.importlinter]); `make test` runs it first.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The manual (mkdocs.yml, docs/): `make docs` serves it with live reload,
# `make docs-check` builds it with --strict (a broken link fails; `make test` runs it first).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

docs-check: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir var/site

# Mutation testing (docs/developers/mutation-testing.md): the modules and tests are listed in
# pyproject.toml's [tool.mutmut]. A fresh run each time (1 to 2 hours on 2 busy cores), niced;
# MUTANT_CHILDREN=1 halves the load. Prints the score, then the survivors.
MUTANT_CHILDREN ?= 2
mutants: setup
	rm -rf mutants
	@mkdir -p var
	nice -n 10 $(BIN)/python -m devtools.with_redis $(BIN)/mutmut run --max-children $(MUTANT_CHILDREN) > var/mutmut-run.log 2>&1 \
	  || { tail -n 40 var/mutmut-run.log; exit 1; }
	$(BIN)/python -m devtools.mutation_score

bench: setup
	$(BIN)/python -m devtools.with_redis bash bench/run.sh

bench-dashboard: setup
	$(BIN)/python -m devtools.with_redis $(BIN)/python bench/dashboard_pages.py 100000

# Starts a redis-server of its own (1,000,000 live sessions); the shared one is never touched.
bench-dashboard-cost: setup
	$(BIN)/python -m bench.dashboard_cost $(ARGS)

# One Redis against a Cluster, admissions per shard, memory, WAIT: redis-servers of its own (never the shared one).
# Webhook delivery rate: real deliver_events processes to the shipped receiver (bench/webhook_delivery.py).
bench-webhooks: setup
	$(BIN)/python -m devtools.with_redis $(BIN)/python -m bench.webhook_delivery $(ARGS)

bench-topologies: setup
	$(BIN)/python -m bench.topologies $(ARGS)

# Heartbeats paced like real players (200,000 accounts, 420,000 sessions), open loop at 50/80/100% of the
# capacity it measures; its own redis-server and gunicorn (3 gevent workers). bench/players/__main__.py; ARGS="--help".
bench-players: setup
	$(BIN)/python -m bench.players $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache test-output
