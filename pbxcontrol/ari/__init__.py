"""Our thin ARI client: REST over requests, events over websocket-client."""
