"""Suite files: TOML in, frozen typed specs out, and the runner that executes them."""
