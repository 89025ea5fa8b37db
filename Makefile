# `make test` and `make demo` are all a new user needs: both create .venv when it is
# missing or older than pyproject.toml, install abdnet editable with its test extras,
# then run pytest or the demo. `make test` also installs the system packages its tests need
# (.ci/install-test-deps: Debian's chromium and chromium-driver, with apt-get when run as
# root) or stops at once with the command that installs them.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test test-deps demo lint clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -e '.[test]'
	touch $(STAMP)

# test-deps first: a missing system package stops the run before the install of .venv.
# One pytest process over the whole suite, every backend included (the former SIGSEGV came
# from OpenVINO Cores unmapping their alternate signal stacks; abdnet now keeps one Core per
# process, see src/abdnet/export/openvino.py and tests/export/test_one_process.py).
test: test-deps $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-deps:
	./.ci/install-test-deps

demo: $(STAMP)
	$(VENV)/bin/abdnet demo --out runs/demo

lint: typecheck
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# mypy over config.py, models/, evaluation/ and engine/ (the files and settings are in
# pyproject.toml's [tool.mypy]); .ci/run runs it too.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
