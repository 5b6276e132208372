"""Studies of the corpora (scripts that print tables), run from the repository root as
`python -m studies.<name>`; the training studies' logs and results are in docs/STUDIES.md."""
