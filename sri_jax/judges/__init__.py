"""Judges of generated text: :mod:`.keyword` (the paper's refusal judge, pure text) and
:mod:`.harm` (a harmfulness judge that runs an instruct model). Imported by module, so reading
the keyword judge does not load JAX."""
