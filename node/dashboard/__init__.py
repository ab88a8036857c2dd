"""`tally dashboard`: a live web page for the whole cluster (node/dashboard/server.py)."""
