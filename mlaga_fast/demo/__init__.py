"""`mlaga-fast demo`: the whole method, offline, on the embedded synthetic catalogue."""
