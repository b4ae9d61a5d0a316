"""The data model every stage shares: the event, item and user columns (schema), the
user × item interaction matrix built from events (matrix), and item content features from
the catalogue's text and attributes (content)."""
