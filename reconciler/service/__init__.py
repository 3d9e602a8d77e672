"""The agent as a system service: the systemd notify protocol and the watchdog, and the log format."""
