"""isobench: train the same workload in PyTorch, TensorFlow and JAX, measured honestly."""
__version__ = "0.1.0"
