"""SageMaker training entry point for `mediasearch aws train video-encoder|clip` (the toolkit's
`sagemaker_program`): the PyTorch training container runs it from /opt/ml/code, where the launcher's
source archive put it beside the mediasearch package.

Thin on purpose: the container contract (hyperparameters.json, channels, /opt/ml/model in the layout
of model.tar.gz, /opt/ml/output/failure) is `mediasearch.training.container`. Set SAGEMAKER_BASE_DIR
to run it over an /opt/ml tree elsewhere, as the tests do.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# In the source archive the package ships beside this file; in the repository it is two levels up.
_HERE = Path(__file__).resolve().parent
for _root in (_HERE, _HERE.parent.parent):
    if (_root / "mediasearch").is_dir() and str(_root) not in sys.path:
        sys.path.insert(0, str(_root))
        break

from mediasearch.training.container import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(os.environ, sys.argv[1:]))
