"""Actions that ship with bgtaskex (always allowed, like `bgtaskex.examples`)."""
