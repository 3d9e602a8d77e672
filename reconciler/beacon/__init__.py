"""The change beacon: a small static document naming the fleet branch's tip, so that polling devices fetch git
only when it moved (document.py: the format; client.py: the device's conditional GET; publish.py: writing it)."""
