"""Backend functions: the registry, discovery, parameter schemas and running one call."""
