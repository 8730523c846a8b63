"""Storage: PostgreSQL, through SQLAlchemy (models, engines, the job lifecycle) and asyncpg (the
API's hot path), and the role the migration makes."""
