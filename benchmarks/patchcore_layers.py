"""Which PatchCore features and how much crop context: slice-level AUROC on the demo.

Trains one model per variant on the demo's normal crops (1% coreset unless told
otherwise) and prints the slice-level AUROC of the test scans against the demo's
truth, with the training and scoring times. Context 0 uses the crops' ROI pixels
only, as the original tool did.

Run after `make run`:
    .venv/bin/python benchmarks/patchcore_layers.py [--results results] [--threads 2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from anodect.patchcore.model import PatchCore, PatchCoreSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchcore_speed import demo_parser, load_demo, slice_auroc  # noqa: E402 - the sibling benchmark's helpers

VARIANTS = [
    # (layers, context)
    (("blocks.4", "blocks.10"), 0),
    (("blocks.4", "blocks.10"), None),
    (("blocks.2",), None),
    (("blocks.2", "blocks.4"), 0),
    (("blocks.2", "blocks.4"), None),
    (("blocks.2", "blocks.4", "blocks.10"), None),
]


def main() -> None:
    parser = demo_parser(__doc__)
    parser.add_argument("--coreset", type=float, default=0.01)
    args = parser.parse_args()
    _, truth, train, test = load_demo(args)
    full_context = train[0][1].context
    print(f"{len(train)} normal scans, {len(test)} test scans; coreset {args.coreset:.2%}; {args.threads} threads")
    print("layers                          context  dims  AUROC   train s  crops/s")
    for layers, context in VARIANTS:
        context = full_context if context is None else context

        def flat(sets):
            crops = [c.crops if context == full_context else c.inner() for _, c in sets]
            return np.concatenate([c.reshape(-1, *c.shape[2:]) for c in crops])

        settings = PatchCoreSettings(layers=layers, coreset_fraction=args.coreset)
        t0 = time.perf_counter()
        model = PatchCore(settings).fit(flat(train), context)
        t_train = time.perf_counter() - t0
        test_crops = flat(test)
        t0 = time.perf_counter()
        scores = model.score(test_crops, context).scores
        speed = len(test_crops) / (time.perf_counter() - t0)
        per_scan = np.split(scores, np.cumsum([c.crops.shape[0] * c.crops.shape[1] for _, c in test])[:-1])
        auroc = slice_auroc(per_scan, test, truth)
        print(f"{'+'.join(layers):30s}  {context:7d}  {model.feature_dim:4d}  {auroc:.4f}  {t_train:7.1f}  {speed:7.1f}")


if __name__ == "__main__":
    main()
