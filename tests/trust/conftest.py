from tests.trust.signing import keys

__all__ = ["keys"]
