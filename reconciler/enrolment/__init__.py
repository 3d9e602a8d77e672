"""Enrolment: the admin registers a device with the fleet and the git server and hands over an expiring join
bundle (enroll.py, remove.py, gitolite.py); the device installs it (join.py).  The bundle format is bundle.py."""
