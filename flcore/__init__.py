"""flcore: the domain-agnostic federated-learning core of flsuite, built on Flower."""

__all__ = ["__version__"]
__version__ = "0.1.0"
