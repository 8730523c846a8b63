"""taskstack: FastAPI API, PostgreSQL job records and Celery worker/beat/Flower from one package."""
