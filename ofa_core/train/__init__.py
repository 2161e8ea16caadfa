"""Progressive-shrinking training of the OFA supernet, with distillation, and the accuracy dataset.

``config`` (YAML schedules as dataclasses), ``data`` (Fashion-MNIST and image folders, torch-only transforms),
``dist`` (one process or torchrun), ``checkpoint`` (atomic, weights-only), ``trainer`` (the phases),
``evaluate`` (subnet accuracy with BatchNorm re-estimation), ``accuracy_dataset`` (JSONL of subnet accuracies).
"""
from .accuracy_dataset import build_accuracy_dataset, dataset_archs
from .config import DataConfig, EvalConfig, OptimConfig, PhaseConfig, TrainConfig, builtin_config, load_config, \
    parse_config, resolve_config
from .data import ImageFolder, Splits, TensorImages, fashion_mnist, make_splits, open_source
from .dist import DistEnv, init_distributed, shutdown
from .evaluate import static_accuracy, subnet_accuracy
from .trainer import ProgressiveShrinking, Trainer, train_from_scratch

__all__ = ["build_accuracy_dataset", "dataset_archs", "DataConfig", "EvalConfig", "OptimConfig", "PhaseConfig",
           "TrainConfig", "builtin_config", "load_config", "parse_config", "resolve_config", "ImageFolder",
           "Splits", "TensorImages", "fashion_mnist", "make_splits", "open_source", "DistEnv", "init_distributed",
           "shutdown", "static_accuracy", "subnet_accuracy", "ProgressiveShrinking", "Trainer",
           "train_from_scratch"]
