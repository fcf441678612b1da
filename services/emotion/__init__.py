"""The emotion service."""
