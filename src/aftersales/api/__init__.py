"""The HTTP API (FastAPI): `aftersales.api.app.create_app`."""
