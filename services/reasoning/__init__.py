"""The reasoning service."""
