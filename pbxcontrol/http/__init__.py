"""The Enswitch JSON API core: the Bottle app and the function registry (`api`), the
envelope, parameters, big bodies, static pages, and the operations endpoints `/health` and
`/metrics`.

May import `pbxcontrol.db` and `pbxcontrol.auth` (which in turn uses only `envelope` from
here); never streams, the service or the recorder.
"""
