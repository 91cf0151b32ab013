"""Coupling: which tensor dimensions must lose the same channels (channel spaces, groups, heads)."""
