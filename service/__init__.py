"""The reward service: FastAPI + uvicorn over the engine (``service.app.create_app``). Its Python client
and the trainer adapters live in :mod:`mig_annotator.client`."""
