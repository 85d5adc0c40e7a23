"""The HTTP API (FastAPI): signed requests, the client's resources under /api/v1, and the shipped client.

    api.app.create_app(faucet=None)   the ASGI app
    api.server                        `paratro api` (foreground) and serve_in_thread (tests, sandbox)
    api.client.ParatroClient          the client that signs requests (httpx + stdlib only)

Importing `api` imports nothing heavy: `api.client` stays usable without FastAPI.
"""
