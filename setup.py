from setuptools import find_packages, setup

setup(
    name="ppmobilenet",
    version="0.1.0",
    description="MobileNet V1/V2 on PaddlePaddle 3: the fluid demo ported, trained, monitored and shipped to ARM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ppmobilenet", "ppmobilenet.*"]),
    # the CPU kernels' C++ sources, compiled on first use (ppmobilenet/kernels/build.py)
    package_data={"ppmobilenet.kernels": ["csrc/*.cc", "csrc/*.h"]},
    python_requires=">=3.9",
    install_requires=[
        "paddlepaddle>=3.0",
        "numpy",
        "visualdl",
        "PyYAML",
        "safetensors",
        "Pillow",
    ],
    # the same commands as tools/*.py (ppmobilenet/cli/), on PATH after `pip install`
    entry_points={"console_scripts": [
        f"ppmobilenet-{name.replace('_', '-')}=ppmobilenet.cli.{name}:main"
        for name in ("train", "eval", "export", "infer", "convert_weights", "provision_lite", "benchmark")]},
    extras_require={
        # scikit-learn ships the digits used by the bundled demo data set.
        "demo": ["scikit-learn"],
        # paddle2onnx does not declare paddle and pins onnx<=1.17.
        "onnx": ["paddle2onnx>=2.1", "onnxruntime", "onnx<=1.17", "ml_dtypes"],
        "test": ["pytest", "hypothesis", "scikit-learn"],
        # The benchmark's PyTorch peer (MobileNetV1/V2/V3 in ppmobilenet/bench/torch_peer.py).
        "bench": ["torch"],
    },
)
