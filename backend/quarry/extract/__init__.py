"""`quarry extract`: a whole extraction from a terminal, with no server (README "Command line").

The command drives the same services the API does — projects, variables, documents, runs, the
embedded runner and the export service — on a SQLite database and a storage directory of its
own (the work directory), so a second invocation finds the first one's answers in the result
cache and asks only what is missing.
"""
