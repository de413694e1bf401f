"""Live streams (Server-Sent Events under /api/stream/): opening one like a JSON request
(`stream`), the per-person slots, and the hub — one thread per API process that owns every
stream's socket in its own epoll set (`outlet`), follows the change journal and writes the
events.

May import `pbxcontrol.db` (the journal), `pbxcontrol.http` (the registry, parameters and
envelope a stream is opened with) and `pbxcontrol.auth`; nothing of the service or recorder.
"""
