"""Status: one watch on the store Applications, each transition recorded once and reported to every sink."""
