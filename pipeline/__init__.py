"""The bake: runs the stages in order for each cloud and keeps the report."""
