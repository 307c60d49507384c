# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv browser bench-quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medxgan demo

# Debian's chromium for tests/report/test_browser.py (the test is skipped, with the reason, without it)
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq >/dev/null 2>&1 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	  echo "chromium not installed: tests/report/test_browser.py will be skipped"

test: $(STAMP) browser
	PREFECT_HOME=$$(mktemp -d) $(BIN)/python -m pytest -q

bench-quick: $(STAMP)  # every benchmark with a quick mode (coupled_encoder has none: minutes)
	for b in cpu_speed dask_scale deployed_audit encoder explain_speed gan_step generators ingest_speed \
	    metrics_speed quality scale train_gan; do $(BIN)/python -m bench.$$b --quick || exit 1; done

clean:
	rm -rf $(VENV) medxgan-store
