"""Result schema, atomic storage, environment capture and reports."""
