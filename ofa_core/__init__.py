"""ofa_core: the OFA-MobileNetV3 search space, elastic supernet, export, training and search."""
__version__ = "0.1.0"
