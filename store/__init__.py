"""PostgreSQL: the schema, its migrations and every SQL statement of the service."""
