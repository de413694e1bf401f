"""The running service: the waitress server that hands streams to the hub (`server`), the
supervisor that forks and replaces API worker processes, signals, readiness and systemd's
notify protocol (`lifecycle`, `notify`).

May import `pbxcontrol.http`, `pbxcontrol.streams` and `pbxcontrol.auth`; the composition
root (`pbxcontrol.runtime`) is the only module above it.
"""
