"""(being written)"""

__all__: list[str] = []

CATALOG_ENTRIES: list = []
