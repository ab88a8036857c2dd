"""Contract engines, and `registry`: the table of them, by name.  Importing this package
registers nothing; a ledger State runs only the engines it is given."""
