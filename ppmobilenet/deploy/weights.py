"""Load trained weights into a model for export or dygraph prediction."""
import os
import sys


def load_weights(model, path, own_dir=None, log=None):
    """path: a .pdparams checkpoint (with or without the suffix), a .safetensors file or a
    fluid-era directory. The classifier must fit too: an export with a re-initialised head would
    ship garbage. A pickle from outside `own_dir` (the config's Global.output_dir) gets the
    one-line warning first: opening a pickle can run code."""
    from ppmobilenet.engine.checkpoint import CheckpointError, load_pretrained, pretrained_file
    from ppmobilenet.engine.safe_weights import untrusted_pickle_warning
    if not os.path.isdir(path):
        try:
            msg = untrusted_pickle_warning(pretrained_file(path), own_dir)
        except CheckpointError:
            msg = None                      # load_pretrained names the missing file
        if msg:
            (log or (lambda m: print(m, file=sys.stderr)))(msg)
    return load_pretrained(model, path, skip_classifier_on_mismatch=False)
