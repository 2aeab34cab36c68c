"""Built-in workloads."""
from __future__ import annotations

from .spec import DataSpec, Dense, OptimizerSpec, ParitySpec, ReLU, Workload

SEED_MLP = Workload(
    name="seed-mlp",
    description="MLP 64-128-64-10 (ReLU) on scikit-learn digits, SGD lr 0.01, batch 32, 10 epochs",
    input_shape=(64,),
    num_classes=10,
    layers=(Dense(128, "dense_0"), ReLU(), Dense(64, "dense_1"), ReLU(), Dense(10, "dense_2")),
    data=DataSpec(source="digits", test_fraction=0.2),
    optimizer=OptimizerSpec(kind="sgd", learning_rate=0.01),
    batch_size=32,
    epochs=10,
    seed=0,
    parity=ParitySpec(steps=20, forward_atol=1e-5, grad_atol=1e-5, loss_atol=1e-5, epoch_loss_atol=1e-4),
    accuracy_band=(0.80, 1.0),
)

BUILTIN: dict[str, Workload] = {w.name: w for w in (SEED_MLP,)}
