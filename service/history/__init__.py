"""The delivery history in PostgreSQL: a read model of the attempts and dead-letter topics."""
