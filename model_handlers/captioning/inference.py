"""SageMaker entry point for the ViT-GPT2 captioning model: batch transform and a captions endpoint.

Thin on purpose: the logic is `mediasearch.indexing.handler.ClipHandler` with a captioner and no CLIP
model, the same handler the local transform runs with `--captions`. JSON Lines manifests in, one
line out per line with `"caption"` (or `"error"`); an `application/x-image` request returns
`{"model", "captions": [...]}`. `mediasearch.backends.sagemaker_caption_handler` builds it: settings
(device, caption length, beams, decode workers, pixel limit) from the MEDIASEARCH_* environment of the
SageMaker model, the weights from the unpacked model directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

# In model.tar.gz the package ships beside this file (code/mediasearch); see the CLIP handler.
_HERE = Path(__file__).resolve().parent
if (_HERE / "mediasearch").is_dir() and str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from mediasearch import backends  # noqa: E402
from mediasearch.indexing.handler import EntryPoints  # noqa: E402

_entry = EntryPoints(backends.sagemaker_caption_handler)
model_fn, input_fn, predict_fn, output_fn = (
    _entry.model_fn,
    _entry.input_fn,
    _entry.predict_fn,
    _entry.output_fn,
)
