"""Who is asking: passwords (argon2), the login throttle, signed tokens and `user/login`,
the person-and-privileges lookup (`authenticator`), and the client's address behind trusted
proxies.

May import `pbxcontrol.db` and `pbxcontrol.http.envelope` (the API's error vocabulary: an
authentication failure is an `ApiError`); nothing of streams, the service or the recorder.
"""
