"""`bgtaskex web`: the dashboard, a Starlette application over the `Client` (the web
extra: Starlette, Jinja2, uvicorn). `app.create_app` builds it; the CLI command
(bgtaskex/cli/web.py) serves it with uvicorn."""
