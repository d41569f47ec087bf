"""A section of the status page that lists things in a table, or says there are none (server-rendered; the caller
escapes its rows)."""

from __future__ import annotations


def table_section(name: str, heading: str, columns: tuple[str, ...], rows: str, *, table: str, caption: str,
                  empty: str, readable: bool) -> str:
    """`<section id=name>` with its heading, then the table `table` of `rows` (HTML) or, without rows, `empty`
    (nothing when the page could not read the estate)."""
    if rows:
        head = "".join(f'<th scope="col">{column}</th>' for column in columns)
        body = (f'<table id="{table}" class="recent-runs"><caption class="visually-hidden">{caption}</caption>'
                f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    else:
        body = f'<p class="empty">{empty}</p>' if readable else ""
    return (f'<section aria-labelledby="{name}-heading" id="{name}"><h2 id="{name}-heading">{heading}</h2>'
            f"{body}</section>")
