# procslice: every entry point. `make demo` and `make test` do all the set-up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/config/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_DEPRECATION_WARNINGS := False
FLEET_SIZE ?= 3
# A front host running haproxy before the fleet's services (group procslice_front).
FLEET_FRONT ?= true
# Roles with a molecule scenario, in dependency order.
ROLES := $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml))

.PHONY: help setup deps venv image demo-image fleet fleet-down deploy demo show test lint pytest rules molecule molecule-roles molecule-fleet bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: deps venv image ## Install packages, the controller venv and the base image

deps: ## Install the Debian packages the controller needs
	@scripts/install-deps.sh

venv: $(VENV)/.stamp ## Build .venv from requirements/controller.txt

$(VENV)/.stamp: requirements/controller.txt
	@echo "controller venv: installing requirements/controller.txt"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/controller.txt
	@touch $@

image: deps ## Build the Debian 12 systemd base image (only when its recipe changed)
	@scripts/build-base-image.sh

demo-image: image ## Build the demo podman app image archive (.cache/images; only when its recipe changed)
	@scripts/build-demo-image.sh

fleet: setup ## Start the local fleet (FLEET_SIZE hosts, default 3, and a front host unless FLEET_FRONT=false)
	ansible-playbook playbooks/fleet.yml -e fleet_size=$(FLEET_SIZE) -e fleet_front=$(FLEET_FRONT)

fleet-down: venv ## Destroy the local fleet
	ansible-playbook playbooks/fleet.yml -e fleet_state=absent

deploy: fleet demo-image ## Deploy inventory/local to the local fleet
	ansible-playbook deploy.yml

show: venv ## Show every service answering, with its slice, limits and workers
	ansible-playbook playbooks/show.yml

demo: deploy show ## Set up, start the fleet, deploy, and show the services answering

lint: deps venv ## yamllint, ansible-lint, ruff, mypy, promtool check rules
	yamllint -s .
	python scripts/role-docs.py --check
	ansible-lint
	ruff check src tests plugins roles bench examples molecule scripts
	ruff format --check src tests plugins roles bench examples molecule scripts
	mypy src/procslice
	promtool check rules dashboards/procslice.rules.yml

rules: setup ## The alert rules' tests (each rule fires on its case and not on the other)
	promtool test rules dashboards/procslice.rules.test.yml

pytest: venv ## Unit, runtime process, filter and preflight tests
	PYTHONPATH=$(CURDIR)/src pytest -q

molecule: molecule-roles molecule-fleet ## Every role's scenario, then the fleet scenario

# Two scenarios at a time (MOLECULE_JOBS), each on its own test host; logs per role.
MOLECULE_JOBS ?= 2
molecule-roles: setup
	@MOLECULE_JOBS=$(MOLECULE_JOBS) scripts/molecule-roles.sh $(ROLES)

molecule-fleet: setup ## deploy.yml on a 3-host fleet over SSH
	@# The fleet lives outside molecule (unmanaged driver): molecule's saved state would
	@# skip prepare on a second run from the same folder, after cleanup removed the hosts,
	@# so each run starts from an empty state directory (not molecule reset, which removes
	@# every molecule container on the machine, other scenarios' included).
	@mkdir -p .cache/logs
	rm -rf .cache/molecule-fleet-state
	MOLECULE_EPHEMERAL_DIRECTORY=$(CURDIR)/.cache/molecule-fleet-state molecule test -s fleet 2>&1 \
	  | tee .cache/logs/molecule-fleet.log \
	  || { scripts/molecule-summary.sh .cache/logs/molecule-fleet.log; exit 1; }

test: setup lint pytest rules molecule ## Everything CI runs

bench: setup ## Benchmarks: serving, reloads, a leak under MemoryMax, deploy times (BENCH_ONLY=leak,deploy)
	@# matplotlib for bench/results/serving.png: installed when requirements/bench.txt changes.
	@cmp -s requirements/bench.txt $(VENV)/.bench-stamp || { \
	  echo "controller venv: installing requirements/bench.txt"; \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/bench.txt \
	  && cp requirements/bench.txt $(VENV)/.bench-stamp; }
	PYTHONPATH=$(CURDIR)/src python bench/run.py $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(BENCH_ARGS)

clean: ## Destroy the local fleet and the build cache
	-ansible-playbook playbooks/fleet.yml -e fleet_state=absent
	rm -rf .cache
