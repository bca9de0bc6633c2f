r"""Export a trained model for Paddle Inference and Paddle Lite (and ONNX).

  python tools/export.py -c configs/demo.yaml -o Global.pretrained_model=output/demo/best_model
  python tools/export.py -c configs/demo.yaml -o Global.pretrained_model=output/demo/best_model \
      -o Global.save_inference_dir=output/demo/inference --lite arm,x86 --onnx

Writes DIR/inference.json + inference.pdiparams (Paddle Inference), DIR/lite/inference.pdmodel +
inference.pdiparams (for Lite's opt), labels.txt, export_meta.json; with --lite,
DIR/lite/<model>_<target>.nb, the x86 one checked against Paddle Inference (max abs diff <= 1e-4,
same top-1); with --onnx, DIR/inference.onnx checked against onnxruntime (<= 1e-5); with --int8,
DIR/inference_int8.onnx too: INT8 post-training quantization calibrated on 128 DataLoader.Train
images (--calibration-images N, >= 100), run it with tools/infer.py --int8.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.deploy.cli import export_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(export_main(__doc__))
