"""pbxcontrol: Asterisk call legs from ARI into SQL, served as an Enswitch-compatible API."""

__version__ = "0.1.0"
