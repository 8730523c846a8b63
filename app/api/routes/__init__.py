"""The API's routes, one module per endpoint group; their dependencies live in `app.api.deps`."""
