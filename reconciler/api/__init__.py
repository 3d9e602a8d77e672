"""The local device API: read-only JSON and Prometheus metrics on a unix socket (and optionally loopback TCP),
one write endpoint (``POST /v1/reconcile``) on the unix socket only."""
