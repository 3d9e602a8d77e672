"""Talking to git servers: the fleet mirror (pygit2), host keys, transport details, URL rules."""
