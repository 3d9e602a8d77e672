"""Staged rollouts, operator side: the stateless controller that reads status branches and commits its
decisions (advance, pause, abort, complete), and the maintenance windows the device obeys.

The rules a device applies (cohorts, which version) are part of the fleet contract: ``fleet/rollouts.py``.
"""
