"""Load trained weights into a model for export or dygraph prediction."""
import sys


def load_weights(model, path, own_dir=None, log=None):
    """path: a .pdparams checkpoint (with or without the suffix), a .safetensors file or a
    fluid-era directory. The classifier must fit too: an export with a re-initialised head would
    ship garbage. A pickle from outside `own_dir` (the config's Global.output_dir) gets the
    one-line warning first: opening a pickle can run code."""
    from ppmobilenet.engine.checkpoint import load_pretrained
    from ppmobilenet.engine.safe_weights import untrusted_pickle_note
    note = untrusted_pickle_note(path, own_dir)
    if note:
        (log or (lambda m: print(m, file=sys.stderr)))(note)
    return load_pretrained(model, path, skip_classifier_on_mismatch=False)
