"""Human-readable views of a results table."""
