"""navai_core: the framework-free core of navai."""
