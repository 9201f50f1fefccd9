# Two commands do all the set-up: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TARGET ?= jetson-orin-nano

.PHONY: setup demo test clean

$(BIN)/edgecompress: pyproject.toml
	# cmake and g++ build and test the C++ runner's TensorRT-free core in deploy/ (apt where missing, as root).
	@command -v cmake >/dev/null && command -v g++ >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq cmake g++ >/dev/null; } \
		|| echo "note: cmake or g++ missing and not root: install them to build deploy/ (its tests are skipped without them)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/edgecompress

demo: setup
	$(BIN)/edgecompress build --target $(TARGET)

# One worker per core (pytest-xdist), each test file in one worker so its module fixtures are built once.
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs
