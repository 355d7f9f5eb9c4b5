"""SageMaker entry point for the CLIP embedding model: batch transform and the query endpoint.

Thin on purpose: the logic is `mediasearch.indexing.handler.ClipHandler`, which the local transform runner
also uses, so what runs on SageMaker is what the tests run. `mediasearch.backends.sagemaker_clip_handler`
builds it: settings (device, batch size, decode workers, pixel limit) from the MEDIASEARCH_* environment
of the SageMaker model, the weights always from the unpacked model directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

# In model.tar.gz the package ships beside this file (code/mediasearch). The container already puts
# code/ on sys.path; doing it here too lets tests and other hosts load this file by path.
_HERE = Path(__file__).resolve().parent
if (_HERE / "mediasearch").is_dir() and str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from mediasearch import backends  # noqa: E402
from mediasearch.indexing.handler import EntryPoints  # noqa: E402

_entry = EntryPoints(backends.sagemaker_clip_handler)
model_fn, input_fn, predict_fn, output_fn = (
    _entry.model_fn,
    _entry.input_fn,
    _entry.predict_fn,
    _entry.output_fn,
)
