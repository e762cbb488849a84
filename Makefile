# mlp_jax: `make train` and `make test` set everything up on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The JAX wheel: "jax" (CPU), "jax[cuda12]" (NVIDIA GPUs), "jax[tpu]" (TPU VMs).
JAX ?= jax
# PyTorch for `make bench`'s peers: the CUDA build where an NVIDIA GPU answers, else the
# CPU-only build (a local version only PyTorch's own index, or a wheel in pip's find-links,
# holds; a tenth of the CUDA build's size).
TORCH_VERSION ?= 2.13.0
HAS_NVIDIA_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH ?= torch==$(TORCH_VERSION)$(if $(HAS_NVIDIA_GPU),,+cpu)
TORCH_INDEX ?= $(if $(HAS_NVIDIA_GPU),,--retries 1 --extra-index-url https://download.pytorch.org/whl/cpu)
# Extras of pyproject.toml: test (pytest, ruff, the notebook runner); tfds (TensorFlow and
# TFDS, a data source where the network allows); gcs (gs:// paths without TensorFlow).
EXTRAS ?= test
CONFIG ?= experiments/mlp_scratch.py
# Empty: runs/ and the config file's name less .py, worked out by the shell (make's own
# functions split a name that holds a space).
WORKDIR ?=
# A value as one word of the shell: in single quotes, each quote of its own closed, escaped
# and reopened. (make itself expands a `$` in it first: write `$$` for one.) A newline cannot
# be quoted so, and is refused in one line.
quote = '$(subst ','\'',$(1))'
define newline


endef
$(if $(findstring $(newline),$(CONFIG)$(WORKDIR)$(ARGS)),$(error CONFIG, WORKDIR and ARGS cannot hold a newline; rename the path, or run python -m mlp_jax.main yourself))
# An empty PYTHON made the venv's line `-m venv .venv`, whose error make ignores; a `$` in the
# clone's path failed pip's editable install in two tracebacks (setuptools expands it).
$(if $(strip $(PYTHON)),,$(error PYTHON is empty; give the Python 3.11 or newer that makes $(VENV), e.g. make PYTHON=python3.11))
$(if $(findstring $$,$(CURDIR)),$(error this clone's path holds a '$$', which pip's editable install takes for a variable; clone it into a path without one))
RUN_WORKDIR = $(if $(WORKDIR),$(call quote,$(WORKDIR)),"runs/$$(basename -- $(call quote,$(CONFIG)) .py)")
ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data train eval test test-all lint docs bench speedrun parity exercises tune best \
	notebook device-check

# A run given its data (ARGS=--config.data_dir=..., a bucket's on a TPU VM) needs none here.
install: $(VENV)/.installed $(if $(findstring --config.data_dir,$(ARGS)),,data)

# A .venv whose interpreter no longer runs (made by a Python since moved or removed, or one
# this user may not run) is said so in one line, not met as "python: not found".
check_venv = if [ -e $(VENV) ] && [ ! -d $(VENV) ]; then echo "error: $(VENV) is a file, not \
the folder make sets up; move it away, or give make VENV=another" >&2; exit 2; \
elif [ -e $(VENV) ] && ! $(PY) -c "" 2>/dev/null; then echo "error: $(VENV) is \
there, but $(PY) does not run (made by a Python since moved or removed, or one this user may \
not run); delete $(VENV) and run make again" >&2; exit 2; fi

# One set-up at a time (flock, where util-linux has it), the .venv looked at once it is held:
# a second make in a fresh clone replaced pip under the first's feet (pip's traceback); it
# now waits, saying so, then finds it done.
$(VENV)/.installed: pyproject.toml
	@{ ! command -v flock >/dev/null || { exec 9>>.venv.lock && { flock -n 9 || { echo \
	  "make: waiting for the set-up of $(VENV) another make is running (it holds .venv.lock)"; \
	  flock 9; }; }; }; }; \
	[ ! $@ -nt pyproject.toml ] || exit 0; \
	$(check_venv); \
	set -ex; \
	$(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q "$(JAX)" -e ".[$(EXTRAS)]"; \
	touch $@

# Fashion-MNIST's IDX files: found where a run looks for them (status 0), missing (3), or a
# setting that names them wrongly (FASHION_MNIST_DIR: its one line, 2).
define FIND_DATA
import sys
from mlp_jax import starting
starting.stop_at_once_while_starting()  # Ctrl-C in its imports: one line, as a command's.
starting.explain_missing_dependencies()
from mlp_jax import data, errors
with errors.one_line_errors():
    sys.exit(0 if data.find_idx_dir() else 3)
endef
export FIND_DATA

# Missing: Debian's package where apt-get exists; else TFDS where it is installed (the tfds
# extra: TensorFlow, 1.6 GB, which downloads them at the first run); else one line saying how
# to get them.
data: $(VENV)/.installed
	@$(check_venv)
	@$(PY) -c "$$FIND_DATA"; found=$$?; [ $$found = 3 ] || exit $$found; \
	{ command -v apt-get >/dev/null \
	  && $(SUDO) apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; } \
	|| { $(PY) -c "import importlib.util as u, sys; sys.exit(not u.find_spec('tensorflow_datasets'))" \
	  && echo "Fashion-MNIST's IDX files not installed: TFDS downloads them at the first run."; } \
	|| { echo "error: Fashion-MNIST's IDX files are not installed, and apt-get could not \
	install dataset-fashion-mnist; put its four IDX files (github.com/zalandoresearch/fashion-mnist) \
	in a folder and set FASHION_MNIST_DIR=FOLDER, or add TFDS to download them: \
	$(PY) -m pip install -e '.[tfds]'" >&2; exit 2; }

# A workdir or data in a bucket (gs://, as on a TPU VM) needs the gcs extra (gcsfs and Google's
# storage client, about 60 MB): added when WORKDIR or ARGS name one.
GCS := $(if $(findstring gs://,$(WORKDIR) $(ARGS)),$(VENV)/.gcs)

$(VENV)/.gcs: $(VENV)/.installed
	$(PY) -c "import gcsfs, google.cloud.storage" 2>/dev/null || $(PY) -m pip install -q -e ".[gcs]"
	touch $@

train: install $(GCS)
	$(PY) -m mlp_jax.main --config=$(call quote,$(CONFIG)) --workdir=$(RUN_WORKDIR) $(ARGS)

eval: install $(GCS)
	$(PY) -m mlp_jax.main --mode=eval --workdir=$(RUN_WORKDIR) $(ARGS)

# Test processes (pytest-xdist; 0: one process). The unit tier's: one more than the CPUs, at
# most 8, since its processes also wait (on files, on each other's compilations: 3 on 2 cores
# took 48-50 s where 2 took 52, fresh caches, 2-core Xeon, 2026-12-07). The full tier's: 2,
# since its tests time signals, locks and processes of their own. Each module stays on one
# worker (--dist loadfile), so that its expensive fixtures are built once, and the modules
# are handed out in the order tests/conftest.py gives them, longest first.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 8 ? n + 1 : 8 )))
FULL_TEST_WORKERS ?= 2
pytest_on = $(PY) -m pytest -q $(if $(filter-out 0,$(1)),-n $(1) --dist loadfile --no-loadscope-reorder)

# The fast tier, after every change: each module's own behaviour on small synthetic data
# (tests/unit, less the whole runs marked slow). Its programs are tiny and each runs once, so
# XLA's CPU back end compiles them without optimising and with its older emitters
# (--quick-compile: half the unit tier's time), and keeps them in .venv between runs (a
# rerun compiles only what a change altered).
test: install
	MLP_JAX_TEST_XLA_CACHE=$(VENV)/.xla-test-cache $(call pytest_on,$(TEST_WORKERS)) --quick-compile tests/unit -m "not slow"

# Everything, what CI runs (.ci/run): the whole unit tier, compiled quick as above, then the
# full tier (tests/integration: the command line, several processes and devices, a bucket, a
# pod slice, the real data, the notebook, the device check), whose programs are compiled as
# users' are, afresh (the unit tier in TEST_WORKERS processes, the full one in
# FULL_TEST_WORKERS). Both tiers run whatever the first gives; either failing fails.
test-all: install
	$(call pytest_on,$(TEST_WORKERS)) --quick-compile tests/unit; unit=$$?; \
	$(call pytest_on,$(FULL_TEST_WORKERS)) tests/integration && exit $$unit

# The config reference (docs/config.md): every field's declaration in mlp_jax/config.py and
# the chapter's two experiments' values; tests/unit/config_test.py fails when it is stale.
docs: install
	$(PY) -m mlp_jax.config experiments/mlp_scratch.py experiments/mlp_concise.py > docs/.config.md
	mv docs/.config.md docs/config.md

lint: install
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

# The studies (experiments/studies/, told in docs/): each writes its results/ and resumes
# where an interruption left it.
STUDIES := experiments/studies
EXERCISES := width depth lr_epochs activation init
QUICK ?=
exercises: install
	for name in $(EXERCISES); do \
	  $(PY) -m experiments.studies.exercises.run --config=$(STUDIES)/exercises/$$name.py \
	    $(if $(QUICK),--quick) || exit 1; \
	done

tune: install
	$(PY) -m experiments.studies.search.run --config=$(STUDIES)/search/joint_search.py \
	  $(if $(QUICK),--quick --tuned_config=runs/mlp_tuned_quick.py --results_dir=runs/tune_quick --workdir=runs/tune_quick)

# The benchmarks' peers: PyTorch and Keras (kept out of `install`, which the tests use).
$(VENV)/.peers: $(VENV)/.installed
	$(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH)" keras
	touch $@

bench: install $(VENV)/.peers
	$(PY) -m benchmarks.run_all

# Time to 0.85 and 0.90 test accuracy (results/speedrun.md) and parity over seeds (results/parity.md).
speedrun: install $(VENV)/.peers
	$(PY) -m experiments.studies.speedrun.run

parity: install $(VENV)/.peers
	$(PY) -m experiments.studies.parity.run

# The one-call accelerator check (results/bench_gpu.md, or $$OUT/bench_gpu.md): with this
# .venv where it exists, else with the machine's own python3, as on the GPU machine.
DEVICE_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
device-check:
	PYTHON=$(DEVICE_PYTHON) bash benchmarks/device_check.sh

# The best plain MLP: the search on held-out images writes $(STUDIES)/best/mlp_best.py, then
# its three final runs (make train, seeds 0-2) and the ablation go to results/best.md.
best: install
	$(PY) -m experiments.studies.search.run --config=$(STUDIES)/best/best_search.py \
	  --results_dir=results/best --workdir=runs/best_search \
	  --tuned_config=$(STUDIES)/best/mlp_best.py
	$(PY) -m experiments.studies.best.run

notebook: install
	$(PY) -m pip install -q notebook
	$(VENV)/bin/jupyter notebook experiments/mlp_chapter.ipynb
