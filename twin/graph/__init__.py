"""Graph stores: the only code that writes the twin to storage.

:class:`twin.graph.embedded.EmbeddedStore` (SQLite in WAL mode) is the
default; a Neo4j backend implements the same methods over Bolt.
"""
