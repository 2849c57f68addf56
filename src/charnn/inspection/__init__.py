"""A look inside a model: what it expects at each character of a text and what its units track."""
