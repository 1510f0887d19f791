"""The cell engine: typed cells and their kinds, planning, the content-addressed store, model
preparation, device resolution and the scheduler (in-process or on Ray)."""
