"""The recorder: channel lifecycles from ARI into the legs table."""
