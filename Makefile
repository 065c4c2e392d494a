# Two commands for a newcomer: `make run` and `make test`. See README.md.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8080
FAKE_PORT ?= 9100

.PHONY: run chat chat-staff test services bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## Start the bot on SQLite with fresh demo data and in-memory state.
run: $(VENV)/.installed
	rm -f data/yunfanglin.sqlite3  # the demo starts afresh (and with the current schema)
	$(PY) main.py init-db
	$(PY) main.py seed-demo
	@echo
	@echo "  云芳邻 is starting on http://$(HOST):$(PORT)/wechat"
	@echo "  Chat with it in a second terminal:  make chat        (as a resident)"
	@echo "                                      make chat-staff  (as the demo staff member)"
	@echo "  Pushes (reminders, notices) go to a fake WeChat API and are printed here."
	@echo
	@if [ -n "$$WECHAT_API_BASE" ]; then \
	  HOST=$(HOST) PORT=$(PORT) $(PY) main.py serve; \
	else \
	  $(PY) main.py fake-wechat --port $(FAKE_PORT) & fake=$$!; \
	  trap 'kill $$fake 2>/dev/null' EXIT INT TERM; \
	  HOST=$(HOST) PORT=$(PORT) WECHAT_API_BASE=http://127.0.0.1:$(FAKE_PORT) $(PY) main.py serve; \
	fi

chat: $(VENV)/.installed
	@HOST=$(HOST) PORT=$(PORT) $(PY) main.py chat $(if $(OPENID),--openid $(OPENID))

chat-staff: $(VENV)/.installed
	@HOST=$(HOST) PORT=$(PORT) $(PY) main.py chat --staff

## Start PostgreSQL and Redis if needed, then run the whole suite.
test: $(VENV)/.dev-installed services
	$(PY) -m pytest

services:
	@bash scripts/services.sh

bench: $(VENV)/.dev-installed services
	$(PY) bench/classify_bench.py
	$(PY) bench/webhook_bench.py
	$(PY) bench/race_bench.py
	$(PY) bench/push_bench.py

clean:
	rm -rf $(VENV) data .pytest_cache
