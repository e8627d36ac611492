"""Pure core: dataclasses and numpy geometry, no I/O."""
