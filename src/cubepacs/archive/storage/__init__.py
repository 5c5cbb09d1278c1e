"""Object storage for instances and cubes (``file://`` embedded)."""
