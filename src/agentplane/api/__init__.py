"""The HTTP API's own pieces: problem+json errors, middleware, health and metrics
routes, listening sockets. Each package has its router (`<package>/api.py`, with the
dependencies of agentplane.auth.deps); agentplane.app puts them all in one app.

Nothing below the app imports this package."""
