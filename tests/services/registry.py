"""Placeholder: filled by the service fixture work."""
