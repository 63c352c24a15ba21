# Two commands for a newcomer: `make demo` (set-up + main job) and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo
DEMO_MEMBERS ?= 5000
DEMO_AS_OF ?= 2026-01-01
export MPLBACKEND := Agg

.PHONY: demo test test-fast bench serve clean-demo install

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# The test suite also runs the Spark parity tests (pyspark builds its wheel once: ~2.5 min; Java 17 is needed).
SPARK_STAMP := $(VENV)/.installed-spark
$(SPARK_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,spark]'
	@touch $(SPARK_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/member-ml generate --members $(DEMO_MEMBERS) --seed 7 --out $(DEMO_DIR)/raw --messy
	$(BIN)/member-ml ingest --source parquet --path $(DEMO_DIR)/raw --out $(DEMO_DIR)/store
	$(BIN)/member-ml summary --store $(DEMO_DIR)/store
	$(BIN)/member-ml loyalty --store $(DEMO_DIR)/store --as-of $(DEMO_AS_OF) --out $(DEMO_DIR)/loyalty.parquet
	$(BIN)/member-ml train churn --store $(DEMO_DIR)/store
	$(BIN)/member-ml train ltv --store $(DEMO_DIR)/store --horizon 180
	$(BIN)/member-ml train timing --store $(DEMO_DIR)/store
	$(BIN)/member-ml train recs --store $(DEMO_DIR)/store
	$(BIN)/member-ml models
	$(BIN)/member-ml online build --store $(DEMO_DIR)/store --as-of $(DEMO_AS_OF) --out $(DEMO_DIR)/online.duckdb
	$(BIN)/member-ml serve import
	$(BIN)/member-ml score --store $(DEMO_DIR)/store --as-of $(DEMO_AS_OF) --out $(DEMO_DIR)/scores
	$(BIN)/member-ml campaign build --scores $(DEMO_DIR)/scores --out $(DEMO_DIR)/campaign

test: $(SPARK_STAMP)
	$(BIN)/python -m pytest -q -n 2 --timeout 900

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -m "not slow and not spark and not http"

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run

serve: $(STAMP)  ## online scoring on http://127.0.0.1:3000 (models: serving/models.lock.yaml from `member-ml serve import`, else champion aliases; table: data/demo/online.duckdb)
	$(BIN)/bentoml serve serving.service:MemberScoring --host 127.0.0.1 --port $${PORT:-3000}

clean-demo:
	rm -rf $(DEMO_DIR)
