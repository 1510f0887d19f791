"""The suite file: its schema (typed, frozen pydantic records), loading a TOML file into it, and the
problems found in one (one line each). Imports nothing of ours but errors, the registry and the zoo catalog."""
