# netvigil: every target bootstraps what it needs (packages, headers, mounts, venv).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: bootstrap run test bench image clean

bootstrap:
	@VENV=$(VENV) scripts/bootstrap.sh

run: bootstrap
	$(VENV)/bin/netvigil run $(ARGS)

test: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider tests $(ARGS)

image: bootstrap
	@deploy/image/build.sh

bench: bootstrap
	$(PY) bench/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
