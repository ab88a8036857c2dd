"""The `tally` command line: one module per subcommand group, and the demos."""
