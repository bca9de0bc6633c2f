"""Convert weights to safetensors, the format to share (opening it cannot run code).

  python tools/convert_weights.py output/demo/best_model                      # Arch from its .pdstates
  python tools/convert_weights.py downloaded.pdparams -c configs/demo.yaml --out model.safetensors
  python tools/convert_weights.py MobileNetV1_pretrained/ -c configs/MobileNetV1_x1_0.yaml
  python tools/convert_weights.py MobileNetV3_small_x1_0_ssld_pretrained.pdparams -c configs/MobileNetV3_small_x1_0.yaml
  python tools/convert_weights.py mobilenet_v3_small-047dcff4.pth -c configs/MobileNetV3_small_x1_0.yaml -o Arch.variant=torchvision
  python tools/convert_weights.py w.pdparams -c configs/demo.yaml -o Arch.scale=0.5   # SOURCE before -o
  python tools/convert_weights.py output/demo/latest --ema                    # the EMA weights

SOURCE: a checkpoint prefix, a .pdparams / .pdema / .safetensors file, a fluid-era folder (one
file per variable), or any published layout Global.pretrained_model takes: PaddleClas and
paddle.vision .pdparams, torchvision .pth (read without torch). No pickle in it can run code.
The architecture (model, scale, class_num, head, variant) comes from -c CONFIG
[-o Arch.key=value] or, for a checkpoint of this project, from its .pdstates; it goes into the
file's metadata. Weights of the other lineage are refused with the -o Arch.variant=... they
need. The result, in this package's tensor names, loads with
Global.pretrained_model=model.safetensors. Exit codes: 0 done, 2 bad config, 1 bad weights.
"""
from .common import add_config_args, command_parser, run


def _parser():
    p = command_parser(__doc__)
    p.add_argument("source", help="checkpoint prefix, .pdparams/.pdema/.pth/.safetensors file or fluid-era folder")
    p.add_argument("--out", default=None, help="the .safetensors to write [SOURCE with the suffix .safetensors]")
    p.add_argument("--ema", action="store_true", help="take <prefix>.pdema, not .pdparams")
    return add_config_args(p, required=False)


def main(argv=None):
    def body():
        args = _parser().parse_args(argv)
        from ..config import ConfigError, load_config
        from ..weights.convert import convert_to_safetensors
        if args.override and not args.config:
            raise ConfigError("-o needs -c CONFIG")
        arch = load_config(args.config, args.override)["Arch"] if args.config else None
        print(convert_to_safetensors(args.source, args.out, arch, use_ema=args.ema)["message"])
    return run(body)
