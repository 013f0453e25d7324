# meshstream: `make run` starts everything, `make test` runs every test.
# Both create the virtualenv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8765
GATEWAYS ?= $(shell nproc 2>/dev/null || echo 2)
TIME_SCALE ?= 1.0
STAMP := $(VENV)/.installed

.PHONY: run test unit lint proto bench bench-deps clean deps node-deps browser-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

deps: $(STAMP)

run: $(STAMP)
	$(PY) -m services.cli run --port $(PORT) --gateways $(GATEWAYS) --time-scale $(TIME_SCALE)

# Node packages for the Node.js watcher example and the browser test driver.
node-deps: examples/node-watcher/node_modules/.installed
examples/node-watcher/node_modules/.installed: examples/node-watcher/package.json
	cd examples/node-watcher && npm install --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium' >/dev/null; }

test: $(STAMP) node-deps browser-deps bench-deps
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(PY) -m ruff check meshstream_zmq services tests
	$(PY) -m mypy meshstream_zmq services

# Regenerate the protobuf module from proto/ (checked in, so running needs no protoc).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=meshstream_zmq --pyi_out=meshstream_zmq proto/meshstream.proto

# Benchmarks (docs/performance.md): make bench [BENCH_ARGS='--quick' | '--scenarios chat --rounds 3' | '--scenarios resume' | '--baseline DIR' | '--harness shared' ...]
# The own harness: bench/node's load generator and socket.io peer (npm ci), matplotlib for the plots (dev extra).
bench-deps: bench/node/node_modules/.meshstream-stamp
bench/node/node_modules/.meshstream-stamp: bench/node/package-lock.json
	cd bench/node && npm ci --no-audit --no-fund --loglevel=error
	sha256sum bench/node/package-lock.json | cut -d' ' -f1 | tr -d '\n' > $@

bench: $(STAMP) bench-deps
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache examples/node-watcher/node_modules
