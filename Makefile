# endofed: two commands for a fresh machine.
#   make demo   runs the main job: the synthetic 3-site benchmark, each site's data check, and `endofed compare`
#               (scratch, local MIM, federated MIM with local or FedProx fine-tuning, pooled; report in runs/demo)
#   make evidence   the same protocol on the 5-site evidence5 benchmark with the CPU model (about an hour or more
#               on 2 cores; resumable); report in docs/evidence/
#   make test   lint + format check + the whole test suite (what CI runs). Tests come in two tiers:
#     make test-fast          unit + model tests: no SuperLink, SuperNode, flwr run, simulation, endofed-* or
#                             pip process (only `python -c` import checks), no end-to-end compare; < 5 min on 2 cores
#     make test-integration   the rest, marked `integration` or `slow`: real processes on 127.0.0.1, with
#                             timeouts summed from their own waits (tests/deploy_kit.py)
# Each creates .venv and installs everything on first use.
#
# TORCH picks the PyTorch build installed before the rest. The default, torch==2.13.0, is a CPU wheel on
# our CI machines (served from local disk). On a GPU host use e.g. `make test TORCH="torch==2.11.*"`
# with the CUDA build your driver supports; any torch in >=2.11,<2.14 works.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.endofed-installed
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: demo evidence test test-fast test-integration lint browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/endofed synth --preset demo3 --out runs/demo/data --seed 0
	for site in runs/demo/data/site_*.yaml; do \
		$(BIN)/endofed data check --site $$site --config configs/tiny.yaml --preview || exit 1; \
	done
	$(BIN)/endofed compare --experiment configs/experiments/demo.yaml --sites runs/demo/data --out runs/demo/compare

# The evidence run of issue 18: the 5-site evidence5 benchmark, every arm, 3 seeds, the CPU model
# (configs/cpu.yaml). Resumable: run it again and finished units are kept (delete runs/evidence to start over).
# Its report, tables and plots are copied to docs/evidence/.
EVIDENCE := runs/evidence
evidence: $(STAMP)
	test -f $(EVIDENCE)/data/.rendered || \
		{ $(BIN)/endofed synth --preset evidence5 --out $(EVIDENCE)/data --seed 0 && touch $(EVIDENCE)/data/.rendered; }
	for site in $(EVIDENCE)/data/site_*.yaml; do \
		$(BIN)/endofed data check --site $$site --config configs/cpu.yaml || exit 1; \
	done
	$(BIN)/endofed compare --experiment configs/experiments/evidence.yaml --sites $(EVIDENCE)/data --out $(EVIDENCE)/compare
	mkdir -p docs/evidence/plots
	cp $(EVIDENCE)/compare/report.md $(EVIDENCE)/compare/summary.csv $(EVIDENCE)/compare/results.csv \
		$(EVIDENCE)/compare/shortcut.csv docs/evidence/
	cp $(EVIDENCE)/compare/plots/*.png docs/evidence/plots/

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The dashboard's browser test (tests/dashboard) needs headless Chromium: found on PATH (or $$CHROMIUM), else
# installed with apt-get (Debian package chromium) when apt-get is usable (root, or sudo without a password);
# otherwise this says why and the test is skipped with that reason in pytest's summary.
browser:
	@if [ -n "$$CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| command -v google-chrome >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "browser: no Chromium and no apt-get: the dashboard's browser test will be skipped"; \
	else \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
		echo "browser: installing Chromium (apt-get install chromium) for the dashboard's browser test"; \
		{ $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
			|| { $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
		|| echo "browser: apt-get could not install chromium: the dashboard's browser test will be skipped"; \
	fi

test: lint browser
	$(BIN)/python -m pytest -q

FAST_TIER := not integration and not slow

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "$(FAST_TIER)"

test-integration: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not ($(FAST_TIER))"

bench: $(STAMP)
	$(BIN)/python benchmarks/data_throughput.py
	$(BIN)/python benchmarks/synth_speed.py
	$(BIN)/python benchmarks/synth_honesty.py
	$(BIN)/python benchmarks/server_state_cost.py
	$(BIN)/python benchmarks/site_round.py --rounds 4

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache build *.egg-info
