"""Shared timeline primitives: interval arithmetic, the one step-window definition, nesting, launch joins."""
