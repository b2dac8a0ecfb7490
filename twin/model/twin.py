"""The resolved twin held in memory as one pandas DataFrame per table.

Tables and columns come from :mod:`twin.model.schema`. List-valued columns
(``macs``, ``ips``, ``cidrs``, ...) hold Python lists; ``json`` columns hold
dicts or lists. Analyses take a :class:`Twin` and return DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from twin.model import schema

__all__ = ["Twin", "empty_table", "TABLES"]

# Table name -> declared columns, from the schema.
TABLES: dict[str, list[str]] = {}
for _decl in schema.NODES:
    TABLES[_decl.table] = _decl.columns
for _rel in schema.RELATIONSHIPS:
    if _rel.table not in TABLES:
        TABLES[_rel.table] = _rel.columns


def empty_table(table: str) -> pd.DataFrame:
    """Return an empty DataFrame with the declared columns of ``table``."""
    return pd.DataFrame({col: pd.Series(dtype=object) for col in TABLES[table]})


@dataclass
class Twin:
    """One snapshot of the resolved twin.

    Attributes
    ----------
    site : str
        Site name from the site configuration.
    run_id : str
        Build run that produced the snapshot.
    built_at : float
        Build time, epoch seconds.
    tables : dict of str to DataFrame
        ``devices``, ``interfaces``, ``segments``, ``services``,
        ``externals``, ``links``, ``memberships``, ``communications`` and the
        SBOM tables; every declared table is present, possibly empty.
    """

    site: str
    run_id: str
    built_at: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in TABLES:
            if name not in self.tables:
                self.tables[name] = empty_table(name)

    @property
    def devices(self) -> pd.DataFrame:
        return self.tables["devices"]

    @property
    def interfaces(self) -> pd.DataFrame:
        return self.tables["interfaces"]

    @property
    def segments(self) -> pd.DataFrame:
        return self.tables["segments"]

    @property
    def services(self) -> pd.DataFrame:
        return self.tables["services"]

    @property
    def externals(self) -> pd.DataFrame:
        return self.tables["externals"]

    @property
    def links(self) -> pd.DataFrame:
        return self.tables["links"]

    @property
    def memberships(self) -> pd.DataFrame:
        return self.tables["memberships"]

    @property
    def communications(self) -> pd.DataFrame:
        return self.tables["communications"]
