"""pbxcontrol: Asterisk call legs from ARI into SQL, served as an Enswitch-compatible API."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one place the version is written is setup.cfg; the installed metadata carries it.
    __version__ = version("pbxcontrol")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
