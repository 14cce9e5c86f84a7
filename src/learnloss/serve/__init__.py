"""``learnloss serve``: a labeling project as a Label Studio ML backend over HTTP (FastAPI and uvicorn, the
``serve`` extra)."""
