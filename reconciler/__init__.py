"""Edge fleet GitOps reconciler."""

__version__ = "0.1.0"
