"""The build: the runner (``python -m lhlib.build.book``), the pages, the report, glue and the figure style."""
