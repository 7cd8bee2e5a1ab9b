"""HTTP for every service: entrypoints, the error shape, OpenAPI, health and metrics pages."""
