"""Built-in plugins, installed as pbxcontrol.plugins; each is a package with setup(ctx)."""
