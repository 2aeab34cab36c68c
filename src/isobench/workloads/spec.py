"""Framework-neutral workload description: model, data, loss, optimizer and schedule.

Nothing here imports a framework. Parameters use one canonical numpy layout (see DESIGN.md):
Dense kernel ``(in, out)`` and bias ``(out,)``, named ``"<layer>/<param>"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Union


@dataclass(frozen=True)
class Dense:
    """Fully connected layer: ``y = x @ kernel + bias``."""
    units: int
    name: str
    kind: ClassVar[str] = "dense"


@dataclass(frozen=True)
class ReLU:
    kind: ClassVar[str] = "relu"


Layer = Union[Dense, ReLU]


@dataclass(frozen=True)
class DataSpec:
    """Where the examples come from and how they are split.

    ``source`` names a loader in :mod:`isobench.data`; ``scale`` divides raw pixel values into [0, 1].
    """
    source: str = "digits"
    test_fraction: float = 0.2
    scale: float = 16.0


@dataclass(frozen=True)
class OptimizerSpec:
    """Every hyperparameter explicit: backends never rely on a framework default."""
    kind: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0


@dataclass(frozen=True)
class ParitySpec:
    """Tolerances for ``isobench parity``, all absolute, float32 frameworks against a float64 reference.

    ``epoch_loss_atol`` bounds the per-epoch mean training loss over the whole run; ``loss_atol`` the
    loss of each of the first ``steps`` steps; ``grad_atol`` every step-0 gradient entry; ``forward_atol``
    every initial logit.
    """
    steps: int = 20
    forward_atol: float = 1e-5
    grad_atol: float = 1e-5
    loss_atol: float = 1e-5
    epoch_loss_atol: float = 1e-4
    equal_accuracy: bool = True


@dataclass(frozen=True)
class Workload:
    """One unit of identical work, built natively by every backend."""
    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[Layer, ...]
    data: DataSpec = field(default_factory=DataSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    loss: str = "softmax_cross_entropy"  # logits in, mean over the batch
    batch_size: int = 32
    epochs: int = 10
    seed: int = 0
    init: str = "glorot_uniform"  # kernels; biases are zero
    parity: ParitySpec = field(default_factory=ParitySpec)
    accuracy_band: tuple[float, float] = (0.0, 1.0)  # test accuracy a correct implementation reaches

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter names and shapes, in layer order."""
        shapes: dict[str, tuple[int, ...]] = {}
        width = int(_prod(self.input_shape))
        for layer in self.layers:
            if isinstance(layer, Dense):
                shapes[f"{layer.name}/kernel"] = (width, layer.units)
                shapes[f"{layer.name}/bias"] = (layer.units,)
                width = layer.units
        return shapes

    def steps_per_epoch(self, n_train: int) -> int:
        """Batches per epoch; the last batch keeps the remainder (no sample is dropped)."""
        return -(-n_train // self.batch_size)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out
