# pier: the entry points a newcomer types.
#   make run    build everything and serve the demo (installs only the wasm target,
#               openssl and python3-venv if missing, and componentize-py into target/venv)
#   make test   install what the tests need, build, run the whole suite

CARGO   ?= cargo
GUESTS  := echo chargen chat fortune http-server resp smtp proxy counter flow chaos misbehave hostile commands wrong-world server-echo server-chat server-faults
WASM    := target/wasm32-wasip2/release
PIER    := target/release/pier
BENCH   := target/release/pier-bench
# The native packages. Every native cargo invocation selects exactly these, so
# cargo resolves one feature set and wasmtime compiles once (a narrower
# selection unifies features differently: pier-bench adds tokio/process, the
# guests' wit-bindgen macro adds anyhow/std under wasmtime's own macro).
# `--bins` on build: the guests' cdylibs do not link natively.
NATIVE   := pier pier-bench pier-guest pier-guest-flow pier-server-guest resp http-server smtp
# What the tests and benchmarks run besides pier (nc, socat, curl, wrk,
# redis-cli, redis-benchmark, redis-server, promtool, systemd-socket-activate);
# running pier needs none of them.
TEST_APT := netcat-openbsd socat curl wrk redis-tools redis-server prometheus systemd openssl swaks haproxy nginx libnginx-mod-stream
# The demo's TLS listeners use a throwaway CA and certificate made here by
# `make build` with the openssl CLI (never committed): target/demo-certs.
CERTS := target/demo-certs
# The `wasmtime serve` baseline of `make bench`: the CLI of the host's wasmtime
# version, built once into target/tools: `run` and `serve` only (serve does not
# compile without component-model-async), no other tools or proposals; clap's
# defaults keep `--help` and readable usage errors.
WASMTIME_VERSION := 48.0.8
WASMTIME := target/tools/bin/wasmtime
# Handlers written in Python (guest/python/NAME/app.py), made components by
# componentize-py, pinned, installed from PyPI into a virtual environment
# under target/ by `make setup-python`; built to target/python/NAME.wasm.
COMPONENTIZE_PY_VERSION := 0.25.1
VENV        := target/venv
COMPONENTIZE := $(VENV)/bin/componentize-py
PY_GUESTS   := echo chat raise server-echo
PY_WASM     := $(addprefix target/python/,$(addsuffix .wasm,$(PY_GUESTS)))
WIT_FILES   := $(shell find wit -name '*.wit')

.PHONY: all setup setup-run setup-test setup-python build run test fuzz bench bench-tools bench-smoke bench-100k lint fmt clean

all: build

## setup: everything below (what `make run` and `make test` need), if missing
setup: setup-run setup-test setup-python

## setup-run: what building and running need: the wasm32-wasip2 target and the
## openssl CLI (for the demo certificate), if missing
setup-run:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@command -v openssl >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssl; }

## setup-test: the Debian packages the tests and benchmarks use, if missing
setup-test:
	@missing=""; for p in $(TEST_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## setup-python: what building the Python handlers needs: python3 and python3-venv
## (Debian) if missing, and componentize-py $(COMPONENTIZE_PY_VERSION) in $(VENV) if missing
setup-python:
	@missing=""; command -v python3 >/dev/null || missing="python3"; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@if ! $(COMPONENTIZE) --version 2>/dev/null | grep -qx 'componentize-py $(COMPONENTIZE_PY_VERSION)'; then \
		echo "installing componentize-py $(COMPONENTIZE_PY_VERSION) into $(VENV)"; \
		python3 -m venv $(VENV) && $(VENV)/bin/pip install -q --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION); \
	fi

# A Python handler (of the server-handler world if its name starts with
# `server-`): its sources (copied to target/python/src/NAME, so that
# componentize-py's __pycache__ stays out of guest/) and the WIT contract.
.SECONDEXPANSION:
target/python/%.wasm: $$(wildcard guest/python/$$*/*.py) $(WIT_FILES) | setup-python
	@rm -rf target/python/src/$* && mkdir -p target/python/src/$*
	@cp guest/python/$*/*.py target/python/src/$*/
	$(COMPONENTIZE) -q -d wit -w $(if $(filter server-%,$*),server-handler,connection-handler) componentize -p target/python/src/$* app -o $@.tmp
	@mv $@.tmp $@

## build: the host and pier-bench in release (features resolved over NATIVE, so
## `make test` reuses them), every Rust guest component and the Python ones
## (target/python/NAME.wasm, rebuilt when their sources or wit/ change)
build: setup-run $(CERTS)/server.pem $(PY_WASM)
	$(CARGO) build --release $(addprefix -p ,$(NATIVE)) --bins
	$(CARGO) build --release --target wasm32-wasip2 $(addprefix -p ,$(GUESTS))

# A CA and a certificate it signed for localhost and 127.0.0.1, for a year.
$(CERTS)/server.pem:
	@mkdir -p $(CERTS)
	@cd $(CERTS) && ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes" && \
		openssl req -x509 $$ec -keyout ca.key -out ca.pem -subj "/CN=pier demo CA" -days 365 2>/dev/null && \
		openssl req $$ec -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null && \
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext && \
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
			-extfile server.ext -out server.pem 2>/dev/null
	@echo "made a demo CA and certificate in $(CERTS) (trust $(CERTS)/ca.pem)"

## run: serve examples/pier.toml, every demo handler on its own port
run: build
	@echo "try:  nc 127.0.0.1 7000           (echo: type a line)"
	@echo "      nc 127.0.0.1 7001 | head    (chargen: RFC 864 stream)"
	@echo "      nc 127.0.0.1 7002           (fortune: one text, then close)"
	@echo "      nc 127.0.0.1 7003           (chat: open two, type lines; /nick NAME)"
	@echo "      redis-cli -p 7004 set k v   (resp: then get k, incr n, ...)"
	@echo "      curl -i 127.0.0.1:7005/hello (http: also / and HEAD)"
	@echo "      swaks --server 127.0.0.1:7006 --to you@example.com --tls   (smtp, STARTTLS)"
	@echo "      curl --cacert $(CERTS)/ca.pem https://localhost:7007/hello   (http over TLS)"
	@echo "      nc 127.0.0.1 7008               (rev: a plain wasi:cli program, inetd-style)"
	@echo "      nc 127.0.0.1 7009               (room: chat in one instance for all clients, server-handler)"
	$(PIER) serve --config examples/pier.toml

## test: the whole suite against the release build: in one cargo invocation the
## integration suite (tests/all) and the unit tests of every native package
## (--test-threads=4 reaches every test binary and the doctests), then bench-smoke
test: setup-test build
	$(CARGO) test --release $(addprefix -p ,$(NATIVE)) -- --test-threads=4
	$(MAKE) bench-smoke

## fuzz: the property tests with many more cases (PROPTEST_CASES, default 100000) and
## the host fuzz with more connections (HOST_FUZZ_CONNECTIONS, default 5000, from a new
## HOST_FUZZ_SEED each run): minutes, not in CI; failing inputs are kept in tests/fuzz-corpus/
fuzz: setup-test build
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} $(CARGO) test --release $(addprefix -p ,$(NATIVE)) --lib
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} $(CARGO) test --release $(addprefix -p ,$(NATIVE)) --test all -- properties
	seed=$${HOST_FUZZ_SEED:-$$(date +%s)}; echo "host fuzz: HOST_FUZZ_SEED=$$seed"; \
	HOST_FUZZ_SEED=$$seed HOST_FUZZ_CONNECTIONS=$${HOST_FUZZ_CONNECTIONS:-5000} \
		$(CARGO) test --release $(addprefix -p ,$(NATIVE)) --test all -- host_fuzz --nocapture

## bench: pier + echo guest vs a native tokio echo (plain and TLS), one run (~3 min); prints the
## table and writes bench/results/latest.{md,json,svg}
bench: setup-test build bench-tools
	$(BENCH) run

## bench-tools: what only `make bench` needs (not `make test`, not CI): wasmtime-cli
## $(WASMTIME_VERSION) in target/tools (built once, several minutes) and the hello wasi:http component
bench-tools: setup-run setup-test
	@if ! $(WASMTIME) --version 2>/dev/null | grep -qE '^wasmtime $(WASMTIME_VERSION)( |$$)'; then \
		echo "building wasmtime-cli $(WASMTIME_VERSION) into target/tools (once; several minutes)"; \
		CARGO_TARGET_DIR=target/tools-build $(CARGO) install --locked wasmtime-cli --version $(WASMTIME_VERSION) \
			--root target/tools --no-default-features --features run,serve,component-model-async,cranelift,pooling-allocator,clap/default; \
	fi
	$(CARGO) build --release --target wasm32-wasip2 -p hello-http -p hello-http-p3

## bench-100k: 100,000 idle echo connections over 6 pier processes on one port (issue 14;
## about 30 s); prints the table and writes bench/results/100k.md. Needs ~7.1 GiB free and
## vm.max_map_count >= 152808 (raised as root, else it says what to run)
bench-100k: build
	$(BENCH) hundred-k --connections 100000 --out bench/results/100k.md

## bench-smoke: every scenario for about a second (part of `make test`); writes to
## target/bench-smoke so committed results stay as they are; fails without numbers;
## then bench-100k in small (2,000 connections, 2 pier processes, ~3 s)
bench-smoke: setup-test build
	@rm -f target/bench-smoke/latest.* target/bench-smoke/hundred-k.md
	$(BENCH) hundred-k --connections 2000 --servers 2 --clients 2 --out target/bench-smoke/hundred-k.md
	$(BENCH) run --quick --out target/bench-smoke
	@grep -q '"ratio": [0-9]' target/bench-smoke/latest.json || \
		{ echo "bench-smoke: no numbers in target/bench-smoke/latest.json" >&2; exit 1; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release -p pier --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip2 $(addprefix -p ,$(GUESTS)) -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
