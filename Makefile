# fer: set-up, tests and the end-to-end demo. Every target sets up what it needs itself.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEMO    ?= demo
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo face-model postgres-server clean-demo screenshots

setup: $(STAMP) face-model

# Re-install only when the declared dependencies change.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev,export]'
	touch $(STAMP)

# The BlazeFace short-range model, checksum-verified, into ~/.cache/fer/models/.
face-model: $(STAMP)
	$(VPY) -m fer.data.face_model

# PostgreSQL's server programs (initdb, pg_ctl), for the several-machines tests' throwaway cluster;
# installed with apt-get only where they are missing.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

test: setup postgres-server
	$(VPY) -m pytest $(PYTEST_ARGS)

test-fast: setup postgres-server
	$(VPY) -m pytest -m "not slow" -x -q $(PYTEST_ARGS)

demo: setup
	$(VPY) runner.py demo --out $(DEMO)

# The MLflow UI and Optuna dashboard over the demo's stores, in headless Chromium (apt-get install chromium).
screenshots: setup
	$(VPY) benchmarks/screenshots.py --demo $(DEMO)

clean-demo:
	rm -rf $(DEMO)
