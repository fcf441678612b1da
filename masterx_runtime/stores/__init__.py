"""Typed, thin access to the two stores MasterX uses: Redis (sessions, breakers) and MongoDB."""
