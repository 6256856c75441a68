"""The reward service: FastAPI + uvicorn over the engine (``service.app.create_app``), and the trainer
integrations (``service.integrations``, importable without the server's dependencies being used)."""
