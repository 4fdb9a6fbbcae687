# Two commands for a fresh machine: `make sim` and `make test`. Both set up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make sim`: the world-model planner drives the arm (SIM_ARGS="--policy actor" for the distilled actor)
SIM_ARGS ?= --policy mpc --task reach
BENCH_DIR ?= results

.PHONY: setup system-deps sim test bench lint format clean

setup: system-deps $(STAMP)

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

# PortAudio (sounddevice) and EGL/Mesa (headless MuJoCo rendering) are system libraries.
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libportaudio\.so\.2' || missing="$$missing libportaudio2"; \
	ldconfig -p | grep -q 'libEGL\.so\.1' || missing="$$missing libegl1 libgl1-mesa-dri"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing system libraries:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing system libraries; run: sudo apt-get install -y$$missing"; exit 1; \
		fi; \
	fi

sim: setup
	$(PY) -m launch.sim --env manipulation $(SIM_ARGS)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m launch.bench env --json $(BENCH_DIR)/bench-env.json
	$(PY) -m launch.bench transport --json $(BENCH_DIR)/bench-transport.json
	$(PY) -m launch.bench vsync --json $(BENCH_DIR)/bench-vsync.json
	$(PY) -m launch.bench model --json $(BENCH_DIR)/bench-model.json
	$(PY) -m launch.bench pipeline --seconds 60 --json $(BENCH_DIR)/bench-pipeline.json

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis results
