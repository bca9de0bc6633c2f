"""Load trained weights into a model for export or dygraph prediction."""


def load_weights(model, path):
    """path: a .pdparams checkpoint (with or without the suffix) or a fluid-era directory.
    The classifier must fit too: an export with a re-initialised head would ship garbage."""
    from ppmobilenet.engine.checkpoint import load_pretrained
    return load_pretrained(model, path, skip_classifier_on_mismatch=False)
