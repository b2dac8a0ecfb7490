"""Resolution: identity, attachment, segment assignment and classification."""

from twin.resolve.resolver import Resolution, resolve

__all__ = ["Resolution", "resolve"]
