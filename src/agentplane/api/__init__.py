"""HTTP API: the app factory, errors, middleware and one router per package."""
