"""The API: the routes (`routes/`, one module per concern), their dependencies, the request and
response bodies, admission control and finished jobs' answers kept in memory. `app/main.py`
assembles them into the FastAPI app (`uvicorn app.main:app`)."""
