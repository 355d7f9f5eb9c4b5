"""Defaults that more than one module states, written once.

Each value here is the default of a setting (`mediasearch.core.settings`) and of a library type that
can be built without settings (`VideoOptions`, the hybrid weights of a request and of the index), so
the two can never drift apart. No imports: anything may import this.
"""

from __future__ import annotations

# Hybrid search: the weight of the keyword (BM25) list and of the CLIP k-NN list after min-max
# normalisation. CLIP carries more because captions and tags are short and miss much of an image.
HYBRID_KEYWORD_WEIGHT = 0.3
HYBRID_CLIP_WEIGHT = 0.7

# Video cutting and sampling (see mediasearch.indexing.video.VideoOptions).
SCENE_THRESHOLD = 27.0  # PySceneDetect's ContentDetector default: lower finds more cuts
FRAMES_PER_SCENE = 3
MAX_SCENE_S = 10.0

# Seconds within which a running server sees another process's committed index writes (LanceDB's
# read consistency interval; see mediasearch.index.lancedb.LanceDBIndex).
INDEX_REFRESH_S = 1.0

# Binary codes: candidates per result taken from the Hamming search (or OpenSearch's rescore
# oversample_factor) before the exact re-rank on float vectors. 20 gave recall@10 0.96 at 100k x 512
# with a random rotation, 10 gave 0.89 (bench/bench_codes.py).
CODES_OVERSAMPLE = 20
