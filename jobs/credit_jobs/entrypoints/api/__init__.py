"""The HTTP API (`credit-jobs api`, docs/api.md): FastAPI routes over the same usecases and run lifecycle as the CLI.

`settings` reads the API's environment and its credentials; `auth` checks a request's credentials and scopes;
`rate_limits` wraps the `limits` library; `triggers` starts runs (annotations in a cluster, a background worker
locally); `app` builds the FastAPI application from those parts and the route modules. `entrypoints.cli.api_command`
is the `credit-jobs api` command that serves it with uvicorn; nothing else imports this package (FastAPI is heavy).
"""
