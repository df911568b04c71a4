"""Local persistence: encryption, the key vault, the cache and the write journal."""
