"""Numeric checks of a converted model against Paddle Inference on the same batch."""
import numpy as np

from .errors import CheckFailed
from .predictors import PaddlePredictor

LITE_TOL = 1e-4
ONNX_TOL = 1e-5


def sample_batch(image_shape, n=4, seed=0):
    """A fixed batch in the normalized input space (what the eval transforms produce)."""
    return np.random.RandomState(seed).standard_normal((n, *image_shape)).astype("float32")


def compare(ref, got, tol, what):
    """-> report dict; CheckFailed when the max abs diff exceeds tol or a top-1 differs where
    the reference's top-2 margin is wider than tol (a closer tie is below numeric resolution).
    Probabilities are compared at tol as it is; logits (Export.softmax false) at tol times their
    largest magnitude, since float32 rounding grows with it."""
    ref, got = np.asarray(ref), np.asarray(got)
    tol = tol * max(1.0, float(np.abs(ref).max()))
    if ref.shape != got.shape:
        raise CheckFailed(f"{what}: output shape {list(got.shape)} != Paddle Inference "
                          f"{list(ref.shape)}")
    diff = float(np.abs(ref - got).max())
    top_ref, top_got = ref.argmax(1), got.argmax(1)
    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2] if ref.shape[1] > 1 else np.full(len(ref), np.inf)
    flips = [int(i) for i in np.nonzero(top_ref != top_got)[0] if margin[i] > tol]
    ties = int(((top_ref != top_got) & (margin <= tol)).sum())
    report = {"what": what, "max_abs_diff": diff, "tolerance": tol, "samples": int(len(ref)),
              "top1_agree": int((top_ref == top_got).sum()), "top1_flips": flips, "ties": ties}
    line = (f"{what}: max abs diff {diff:.3g} (tolerance {tol:g}), top-1 agrees on "
            f"{report['top1_agree']}/{len(ref)}" + (f" ({ties} within-tolerance ties)" if ties else ""))
    if diff > tol or flips:
        raise CheckFailed(f"{line} -> FAILED" + (f"; top-1 differs on samples {flips}: Paddle "
                          f"{top_ref[flips].tolist()} vs {top_got[flips].tolist()}" if flips else ""))
    report["line"] = line + " -> ok"
    return report


def check_against_paddle(export_dir, predictor, sample, tol, what, log=print):
    ref = PaddlePredictor(export_dir).predict(sample)
    got = predictor.predict_batches([sample])[0]
    report = compare(ref, got, tol, what)
    log(report["line"])
    return report
