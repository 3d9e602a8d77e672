"""Trust: signed desired state (SSH-signed commits, path scopes, rotation) and signed models.

    sshsig.py           PROTOCOL.sshsig verified with ``cryptography``
    allowed_signers.py  git's allowed_signers format
    scopes.py           spec.policy.signers: which paths a principal may change
    commits.py          verify_range(repo, applied, tip, policy) -> Verdict: the one commit check
    anchor.py           the device's trust settings, loaded once

``cryptography`` is imported only when a signature is checked: an agent without ``trust`` never loads it.
"""
