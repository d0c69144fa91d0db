# Archivist: two commands on a fresh machine.
#   make serve   set up and run the archive on its embedded default
#   make test    set up and run the whole test suite
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
# The interpreter itself, not a shim (pyenv's): uv re-creates the venv when the path it is given
# differs from the one the venv was made with, and the compiled bytecode would go with it.
PYEXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || echo $(PYTHON))
# uv on PATH if present, else the copy pip installs for $(PYTHON) (run as a module).
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
ARGS ?=

.PHONY: setup viewer serve test lint bench clean

# Bytecode is compiled at setup, so no process compiles pydicom's data dictionary from source
# (where PYTHONDONTWRITEBYTECODE is set, every start would: ~0.5 s and ~30 MB per process).
setup:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || \
	  $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	@$(UV) sync --frozen --python $(PYEXE) --quiet
	@.venv/bin/python -m compileall -q -j 0 \
	  "$$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" src \
	  >/dev/null || true

# The OHIF viewer build (npm @ohif/app, pinned in config.py) into .cache/ohif/<version>, once.
# Offline, the archive still starts and / says how to get the viewer.
viewer: setup
	@$(UV) run --frozen --no-sync python tools/fetch_ohif.py || \
	  echo "warning: the OHIF viewer could not be fetched; / will explain how to get it" >&2

serve: setup viewer
	@$(UV) run --frozen --no-sync archivist serve $(ARGS)

test: setup viewer
	@$(UV) run --frozen --no-sync pytest $(ARGS)

lint: setup
	@$(UV) run --frozen --no-sync ruff check src tests
	@$(UV) run --frozen --no-sync mypy src/archivist/core src/archivist/store src/archivist/index \
	  src/archivist/archive src/archivist/config.py src/archivist/web/dicomweb src/archivist/web/errors.py

# Archivist against Orthanc, DCMTK storescp and a bare pynetdicom SCP in one run (docs/performance.md).
# Installs the reference servers with apt-get when missing; options via ARGS (--quick, --scale N).
bench: setup
	@need=""; for pkg in orthanc orthanc-dicomweb dcmtk; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || need="$$need $$pkg"; done; \
	if [ -n "$$need" ]; then \
	  echo "installing$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	fi
	@$(UV) run --frozen --group bench python -m bench $(ARGS)

clean:
	rm -rf .venv .pytest_cache
