"""Read-only views of a fleet repository for operators and auditors: ``status`` and ``history``.

Everything is read from git alone: the desired state on the fleet branch, what each device ran on its
``status/<device>`` branch.  This package imports nothing heavy at import time; the modules do.
"""
