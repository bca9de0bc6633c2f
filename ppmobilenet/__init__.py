"""ppmobilenet: train, monitor and ship MobileNets with PaddlePaddle 3."""
__version__ = "0.1.0"
