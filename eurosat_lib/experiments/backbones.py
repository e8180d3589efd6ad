"""Chapter study module (to be written)."""
