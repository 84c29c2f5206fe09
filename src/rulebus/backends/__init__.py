"""Storage backends: one interface module, one module per engine."""
