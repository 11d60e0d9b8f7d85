"""Every customer-facing sentence, in Spanish (usted form, as the help pages), and the
keyword lists the bot recognises: one TOML file per subject, read by `flows.catalog`.

A package only so the files travel with an installed copy (package data), wherever the
process's working directory is.
"""
