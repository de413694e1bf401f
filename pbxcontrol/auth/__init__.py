"""Who is asking: passwords (argon2), the login throttle, signed tokens and their keys,
`user/login` and `user/logout`, stream tickets, the person-and-privileges lookup
(`authenticator`), and the client's address behind trusted proxies.

May import `pbxcontrol.db` and `pbxcontrol.http` (the envelope: an authentication failure is
an `ApiError`; the `JsonApi` that `login` and `tickets` register their functions in); nothing
of streams, the service or the recorder.
"""
