"""One module per chapter, named after its notebook: its experiment, facts, tables and figures.

A chapter module imports the engine and the build layer, never another chapter's module.
"""
