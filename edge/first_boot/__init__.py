"""`ocpp-edge first-boot`: a flashed device made a site from the one file an installer
edits on its boot partition (boot_file.py), applied to the system (system.py) at every
start, with what changed since the last start, enrollment and the status file (run.py),
and a failure shown at the readers' lights (signals.py)."""
