"""Names and settings shared by every stage. Imports nothing else from the project."""
