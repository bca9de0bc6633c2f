"""The networks and nothing else: MobileNetV1 (demo and classic heads), MobileNetV2, MobileNetV3
(small, large) in the paddle and torchvision lineages, the seed's MobileNet facade, the fluid-era
weight loader and the registry."""
from ..weights.fluid import FluidParamsError, load_fluid_params, read_fluid_tensor
from .mobilenet_v1 import MobileNet, MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .mobilenet_v3 import MobileNetV3, mobilenet_v3_large, mobilenet_v3_small
from .summary import count_macs, count_parameters, summary

MODELS = {"mobilenet_v1": MobileNetV1, "mobilenet_v2": MobileNetV2,
          "mobilenet_v3_small": mobilenet_v3_small, "mobilenet_v3_large": mobilenet_v3_large}


def build_model(name, **kwargs):
    """build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")."""
    try:
        cls = MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(**kwargs)


def build_model_from_arch(arch):
    """The config's Arch section ({name, class_num, scale, head, variant}) -> a model. Arch dicts
    that are not a validated config (a benchmark spec, older metadata) may leave keys out."""
    name = arch["name"].lower()
    kwargs = {"class_dim": arch["class_num"], "scale": arch.get("scale", 1.0)}
    if name == "mobilenet_v1":
        kwargs["head"] = arch.get("head", "demo")
    else:  # MobileNetV1 is one architecture in every source
        kwargs["variant"] = arch.get("variant", "paddle")
    return build_model(name, **kwargs)


__all__ = ["MobileNet", "MobileNetV1", "MobileNetV2", "MobileNetV3", "build_model",
           "build_model_from_arch", "load_fluid_params", "read_fluid_tensor", "FluidParamsError",
           "count_parameters", "count_macs", "summary", "MODELS"]
