"""Classify images (a file, a folder or a list file) with any of four backends.

  python tools/infer.py -c configs/demo.yaml --backend paddle --input img.png
  python tools/infer.py --model-dir output/demo/inference --backend onnx --input photos/ --json
  python tools/infer.py -c configs/demo.yaml --backend dygraph --checkpoint output/demo/best_model --input list.txt
  python tools/infer.py -c configs/demo.yaml --backend lite --input photos/       # the x86 .nb

Backends: auto (the default: onnx when onnxruntime is installed and the export has
inference.onnx, else paddle - the faster CPU path, see docs/benchmarks.md), dygraph (config +
checkpoint), paddle (Paddle Inference on the export, oneDNN), lite (the export's x86 .nb in Paddle
Lite's runtime), onnx (onnxruntime; --int8 runs the export's inference_int8.onnx). All use the config's
eval preprocessing (Infer.transforms, else DataLoader.Eval.transforms), or without -c the one
recorded in the export's export_meta.json.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.deploy.cli import infer_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(infer_main(__doc__))
