"""The HTTP side: the Enswitch JSON API core (envelope, parameters, auth) and the server."""
