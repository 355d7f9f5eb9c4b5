# Two commands matter: `make demo` (the main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel by default. For CUDA: make setup TORCH_SPEC=torch==2.13.0 TORCH_INDEX=<the PyTorch CUDA index URL>
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
CLIP_MODEL ?= openai/clip-vit-base-patch32
DATA ?= mediasearch-data

export HF_HUB_DISABLE_TELEMETRY = 1

.PHONY: setup scan-setup test lint demo demo-offline demo-random serve bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, so the project's "torch>=" requirement is already met and no other build is pulled.
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

# checkov (the template's security scan, tests/test_infra.py) gets its own environment: it pins
# boto3 exactly, packaging<24 and networkx<2.7, which would downgrade what the project runs with.
SCAN_VENV ?= .venv-scan
CHECKOV_SPEC ?= checkov>=3.3,<4
$(SCAN_VENV)/.installed:
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install -q "$(CHECKOV_SPEC)"
	touch $@

scan-setup: $(SCAN_VENV)/.installed

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup scan-setup lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

# The main job: sample corpus -> ingest (manifests, batch transform, load into LanceDB) -> queries.
demo serve: export MEDIASEARCH_STORE = $(DATA)
demo serve: export MEDIASEARCH_LANCEDB_URI = $(DATA)/lancedb
demo serve: export MEDIASEARCH_CLIP_MODEL = $(CLIP_MODEL)
demo: setup
	$(BIN)/mediasearch demo-data
	$(BIN)/mediasearch ingest $(DATA)/demo
	@for q in "a photo of a red circle" "a blue star on a black background" "a large yellow triangle"; do \
		echo; echo "== $$q"; $(BIN)/mediasearch search "$$q" --k 5 || exit 1; \
	done
	@echo; echo "== videos: a red circle on a blue background (matching scenes with timestamps)"
	$(BIN)/mediasearch search "a red circle on a blue background" --kind video --k 3
	$(BIN)/mediasearch eval --k 1 --k 5 --k 10 --k 20 --plot $(DATA)/recall.png

# The same job for machines that cannot download the real model, with a toy CLIP trained here from
# scratch on synthetic shapes (README: "The offline demo"): training pairs with some colour x shape
# combinations held out, a small CLIP trained on them (held-out recall@k before and after), then the
# demo with it. Its rankings mean something on this corpus, and nothing on photos.
TOY_MODEL ?= $(DATA)/models/toy-clip
TOY_COPIES ?= 6
TOY_EPOCHS ?= 40
demo-offline: setup
	$(BIN)/mediasearch train demo-pairs $(DATA)/train --copies $(TOY_COPIES) > /dev/null
	$(BIN)/mediasearch train clip $(DATA)/train/train.jsonl --eval $(DATA)/train/heldout.jsonl \
		--from-scratch --epochs $(TOY_EPOCHS) --batch-size 64 --out $(TOY_MODEL)
	$(MAKE) demo CLIP_MODEL=$(TOY_MODEL) DATA=$(DATA)

# The former offline demo: randomly initialised ViT-B/32 weights (every stage at the real model's cost,
# the rankings noise).
demo-random: setup
	$(BIN)/mediasearch random-model $(DATA)/models/random-clip --size base
	$(MAKE) demo CLIP_MODEL=$(DATA)/models/random-clip DATA=$(DATA)

serve: setup
	$(BIN)/mediasearch serve

bench: setup
	$(BIN)/python bench/bench_transform.py
	$(BIN)/python bench/bench_search_api.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_knn.py
	$(BIN)/python bench/bench_hnsw_m.py
	$(BIN)/python bench/bench_onnx.py
	$(BIN)/python bench/bench_cli.py
	$(BIN)/python bench/bench_freshness.py --refresh-s 0 0.25 1 --writes 20
	$(BIN)/python bench/bench_living.py
	$(BIN)/python bench/bench_decode_memory.py
	$(BIN)/python bench/bench_duplicates.py
	$(BIN)/python bench/bench_video_encoder.py
	$(BIN)/python bench/bench_text_tower.py
	$(BIN)/python bench/bench_codes.py
	$(BIN)/python bench/bench_cutoff.py
	$(BIN)/python bench/bench_toy_clip.py

clean:
	rm -rf $(DATA) .pytest_cache .ruff_cache
