"""Ingest: read a shop's exports, validate every row, store the valid ones, report the rest."""

from nextbuy.ingest.run import ImportOptions, ImportReport, import_file, import_frame, parse_mapping

__all__ = ["ImportOptions", "ImportReport", "import_file", "import_frame", "parse_mapping"]
