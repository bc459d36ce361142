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
# (ansible.cfg's internal_poll_interval, for the runs that read molecule's own config)
export ANSIBLE_INTERNAL_POLL_INTERVAL := 0.01
FLEET_SIZE ?= 3
# A front host running haproxy before the fleet's services (group procslice_front).
FLEET_FRONT ?= true
# Roles with a molecule scenario, in dependency order.
ROLES := $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml))

.PHONY: help setup deps venv plot-deps image demo-image fleet fleet-down deploy demo show test lint pytest rules molecule molecule-roles molecule-fleet molecule-gates molecule-collection bench clean

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

# matplotlib, for the charts of bench and show: installed when requirements/bench.txt changes.
plot-deps: venv
	@cmp -s requirements/bench.txt $(VENV)/.bench-stamp || { \
	  echo "controller venv: installing requirements/bench.txt"; \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/bench.txt \
	  && cp requirements/bench.txt $(VENV)/.bench-stamp; }

image: deps ## Build the Debian 12 systemd base image (only when its recipe changed)
	@scripts/build-base-image.sh

demo-image: image ## Build the demo podman app image archive (.cache/images; only when its recipe changed)
	@scripts/build-demo-image.sh

fleet: setup ## Start the local fleet (FLEET_SIZE hosts, default 3, and a front host unless FLEET_FRONT=false)
	ansible-playbook playbooks/fleet.yml -e fleet_size=$(FLEET_SIZE) -e fleet_front=$(FLEET_FRONT)

fleet-down: venv ## Stop the controller's Prometheus and destroy the local fleet
	python scripts/prometheus_local.py stop
	ansible-playbook playbooks/fleet.yml -e fleet_state=absent

deploy: fleet demo-image ## Deploy inventory/local to the local fleet, start the controller's Prometheus scraping it
	ansible-playbook deploy.yml
	python scripts/prometheus_local.py start

show: venv plot-deps ## Show every service answering, with its slice, limits and workers; chart its metrics (.cache/show/fleet.png)
	ansible-playbook playbooks/show.yml
	python scripts/prometheus_local.py show

demo: deploy show ## Set up, start the fleet, deploy, and show the services answering

lint: deps venv ## yamllint, the files made from the key table and the role docs current, ansible-lint, ruff, mypy, promtool check rules
	yamllint -s .
	python scripts/keys.py --check
	python scripts/role-docs.py --check
	ansible-lint
	ruff check src tests plugins roles bench examples molecule scripts
	ruff format --check src tests plugins roles bench examples molecule scripts
	mypy src/procslice src/procslice_controller
	promtool check rules dashboards/procslice.rules.yml

rules: setup ## The alert rules' tests (each rule fires on its case and not on the other)
	promtool test rules dashboards/procslice.rules.test.yml

# pytest-xdist workers (a test file stays on one worker: its module fixtures run once).
PYTEST_JOBS ?= 2
pytest: venv ## Unit, runtime process, filter and preflight tests
	PYTHONPATH=$(CURDIR)/src pytest -q -n $(PYTEST_JOBS) --dist loadfile

# MOLECULE_JOBS scenarios at a time (default 3), each on its own test hosts, the fleet
# first (the longest), logs per scenario in .cache/logs. Measured on 2 cores: the fleet
# beside the role scenarios takes 35.5 min for all of them, against 41 min for the role
# scenarios two at a time and then the fleet alone (its tests wait on health gates and
# rolling batches, time the role scenarios now use).
MOLECULE_JOBS ?= 3
molecule: setup demo-image ## Every scenario, the fleet's, the gates' and the collection's beside the roles' (MOLECULE_JOBS at a time)
	@MOLECULE_JOBS=$(MOLECULE_JOBS) scripts/molecule-roles.sh fleet gates collection $(ROLES)

molecule-roles: setup demo-image ## Every role's scenario (ROLES=..., MOLECULE_JOBS at a time)
	@MOLECULE_JOBS=$(MOLECULE_JOBS) scripts/molecule-roles.sh $(ROLES)

# A scenario of the repository's root: its hosts live outside molecule (unmanaged
# driver), and molecule's saved state would skip prepare on a second run from the same
# folder, after cleanup removed the hosts, so each run starts from an empty state
# directory (not molecule reset, which removes every molecule container on the
# machine, other scenarios' included).
define root_scenario
	@mkdir -p .cache/logs
	rm -rf .cache/molecule-$(1)-state
	MOLECULE_EPHEMERAL_DIRECTORY=$(CURDIR)/.cache/molecule-$(1)-state molecule test -s $(1) 2>&1 \
	  | scripts/molecule-steps.sh stamp | tee .cache/logs/molecule-$(1).log \
	  || { scripts/molecule-summary.sh .cache/logs/molecule-$(1).log; exit 1; }
	@echo "== molecule: $(1) steps: $$(scripts/molecule-steps.sh sum .cache/logs/molecule-$(1).log)"
endef

molecule-fleet: setup demo-image ## deploy.yml on a 3-host fleet over SSH
	$(call root_scenario,fleet)

molecule-gates: setup demo-image ## The health-gate matrix: every model's failing releases rolled back behind a front
	$(call root_scenario,gates)

molecule-collection: setup ## The built collection installed and deployed from a directory of its own
	$(call root_scenario,collection)

test: setup lint pytest rules molecule ## Everything CI runs

bench: setup plot-deps ## Benchmarks: serving, reloads, a leak under MemoryMax, deploy times (BENCH_ONLY=leak,deploy)
	PYTHONPATH=$(CURDIR)/src python bench/run.py $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(BENCH_ARGS)

clean: ## Destroy the local fleet and the build cache
	-python scripts/prometheus_local.py stop
	-ansible-playbook playbooks/fleet.yml -e fleet_state=absent
	rm -rf .cache
