# The README's two commands: `make demo` (a CartPole sweep on a local Ray cluster) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[trainer,tracking,dev]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(PY) local_clusters.py run --name demo --num_cpus 2 -- \
		$(PY) hyper_parameter_tuning/config/cartpole_sweep.py --ray_address auto --storage_path results

lint: $(INSTALLED)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) results build *.egg-info
