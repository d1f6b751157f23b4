"""Persistence adapter: SQLAlchemy 2.x Core tables and the queries the engine needs."""
