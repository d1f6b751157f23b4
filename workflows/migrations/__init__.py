"""Alembic migrations of the gocluster schema."""
