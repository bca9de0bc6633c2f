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

Exit codes: 0 done; 2 bad config or arguments (the message names the key); 1 a file, weight,
conversion or numeric check at fault (the message names it and gives the numbers).
"""
from .common import add_config_args, command_parser, run


def _parser():
    p = add_config_args(command_parser(__doc__))
    p.add_argument("--lite", default=None, metavar="TARGETS",
                   help="convert with Paddle Lite's opt for these targets: arm,x86 "
                        "[Export.lite_targets]")
    p.add_argument("--lite-python", default=None,
                   help="a Python 3.8-3.10 with paddlelite [Export.lite_python, "
                        "$PPMOBILENET_LITE_PYTHON, the provisioned venv]")
    p.add_argument("--quant-type", default=None, choices=("QUANT_INT8", "QUANT_INT16"),
                   help="opt's weight-only quantisation of the arm .nb (about 3x smaller; not checkable here)")
    p.add_argument("--onnx", action="store_true", default=None,
                   help="also write inference.onnx (paddle2onnx) and check it [Export.onnx]")
    p.add_argument("--int8", action="store_true", default=None,
                   help="also write inference_int8.onnx: INT8 post-training quantization "
                        "calibrated on DataLoader.Train images (implies --onnx) [Export.int8]")
    p.add_argument("--calibration-images", type=int, default=None, metavar="N",
                   help="training images for the INT8 calibration, >= 100 "
                        "[Export.int8_calibration_images, 128]")
    return p


def main(argv=None):
    def body():
        a = _parser().parse_args(argv)
        from ..config import load_config
        from ..deploy.export import export_model
        export_model(load_config(a.config, a.override), lite_targets=a.lite, lite_python=a.lite_python,
                     onnx=a.onnx, quant_type=a.quant_type, int8=a.int8, calibration_images=a.calibration_images)
    return run(body)
