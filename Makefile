# The two front-door commands are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL_SOURCES := $(wildcard ext/*.pyx ext/*.pxd)

.PHONY: demo test test-systemd bench lint clean tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install (and so re-compile the kernel) when the build inputs change. Without a C
# compiler the kernel is not built and its pure twin runs: the demo says which.
$(STAMP): $(PY) pyproject.toml setup.py $(KERNEL_SOURCES)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The system tools the tests need (Mosquitto, socat, a C compiler): apt-get as root, else a
# message. The demo needs none of them (amqtt stands in for a missing Mosquitto).
tools:
	@.ci/ensure-tools

demo: $(STAMP)
	$(VENV)/bin/ironwatt demo

# The suite runs the compiled kernel and its pure twin side by side (parametrized tests);
# the second run proves the selector's fallback: the whole kernel suite on the twin alone.
# The tests need the compiled kernel: a .venv set up by `make demo` on a machine without a C
# compiler has only the twin, so it is built now that `tools` put the compiler there.
COMPILED := $(PY) -c 'import ext._kernel, ext._snapshot' 2>/dev/null || $(PY) -m pip install --quiet -e '.[test]'

test: tools $(STAMP)
	@$(COMPILED)
	$(VENV)/bin/ironwatt --version
	$(PY) -m pytest -q -p no:cacheprovider
	IRONWATT_NO_EXTENSIONS=1 $(PY) -m pytest -q -p no:cacheprovider -m twin

# The documented systemd install booted for real: Debian 12 (systemd 252) in systemd-nspawn, as
# root (docs/daemon.md, "make test-systemd"). Not part of `make test`.
test-systemd: tools $(STAMP)
	IRONWATT_SYSTEMD_TEST=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/systemd

bench: tools $(STAMP)
	@$(COMPILED)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# ruff, mypy (strict) and the layer contracts of docs/design.md (import-linter); CI runs it.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info ext/*.c ext/*.so
