"""Images -> top-k predictions with label names, through any predictor."""
from ..board import topk_rows
from .errors import DeployError
from .preprocess import batches


def classify(predictor, paths, preprocess, batch_size=8, topk=5, labels=None):
    """-> [{"image": path, "topk": [{"class_id", "label", "score"}, ...]}, ...] in input order."""
    chunks = list(batches(paths, preprocess, batch_size))
    outputs = predictor.predict_batches([b for _, b in chunks])
    results = []
    for (names, _), out in zip(chunks, outputs):
        if labels and out.shape[1] != len(labels):
            raise DeployError(f"the model gives {out.shape[1]} classes but the label file has "
                              f"{len(labels)}")
        for name, top in zip(names, topk_rows(out, topk, labels)):
            results.append({"image": name, "topk": top})
    return results


def format_table(results, backend):
    """A readable table: image, top-1 (id, name, score), the rest of the top-k as id:score."""
    lines = [f"backend: {backend}"]
    if not results:
        return "\n".join(lines)
    width = min(60, max(len("image"), *(len(r["image"]) for r in results)))
    lines.append(f"{'image':<{width}}  {'top-1':<24} {'score':>7}   others")
    for r in results:
        best = r["topk"][0]
        name = f"{best['class_id']} {best['label']}" if best["label"] is not None else str(best["class_id"])
        image = r["image"] if len(r["image"]) <= width else "..." + r["image"][-(width - 3):]
        rest = "  ".join(f"{t['class_id']}:{t['score']:.4f}" for t in r["topk"][1:])
        lines.append(f"{image:<{width}}  {name[:24]:<24} {best['score']:7.4f}   {rest}")
    return "\n".join(lines)
