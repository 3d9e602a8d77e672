"""The real ``model_signing`` package (dev extra), called in-process: its CLI takes seconds to start."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def ms_sign(model: Path, private: Path, signature: Path | None = None) -> Path:
    import model_signing

    sig = signature or model / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=[sig], ignore_git_paths=True)).sign(model, sig)
    return sig


def ms_verifies(model: Path, public: Path, ignore: Sequence[str] = ()) -> bool:
    """``model_signing``'s own verdict on ``model/model.sig`` (a ValueError is its "no")."""
    import model_signing

    sig = model / "model.sig"
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).set_hashing_config(
            model_signing.hashing.Config().set_ignored_paths(paths=[sig, *(model / p for p in ignore)],
                                                             ignore_git_paths=True)).verify(model, sig)
    except ValueError:
        return False
    return True
