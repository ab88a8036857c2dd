"""Property tests: hypothesis draws inputs and operation sequences and checks invariants."""
