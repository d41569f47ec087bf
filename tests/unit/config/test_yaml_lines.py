"""bcd.config.yaml_lines: the line of many paths in one pass over the text."""

from __future__ import annotations

import textwrap

from bcd.config import yaml_data
from bcd.config.yaml_lines import lines_of

TEXT = textwrap.dedent(
    """\
    sites:
      dorset: {}
    services:
      payroll:
        active: dorset
        sites:
          dorset:
            probes:
              - name: web
                tcp: {host: h, port: 1}
              - tcp: {host: h, port: 2}
                name: "7"
      library: {active: dorset}
      library: {active: hampshire}
    """
)


def test_each_path_gets_the_line_of_its_deepest_existing_node() -> None:
    paths = [
        ("services", "payroll", "active"),
        ("services", "payroll", "sites", "dorset", "probes", 0, "tcp", "port"),
        ("services", "payroll", "sites", "dorset", "probes", 1),
        ("services", "payroll", "sites", "dorset", "probes", "web"),  # a probe found by its name
        ("services", "payroll", "sites", "dorset", "probes", "7", "tcp"),  # a name after other keys
        ("services", "payroll", "nowhere", "deeper"),
        ("services", "payroll", "sites", "dorset", "probes", 9),
        ("services", "library", "active"),  # of duplicate keys, the last (its value is the data)
        ("elsewhere",),
        (),
    ]
    assert lines_of(TEXT, yaml_data.load(TEXT), paths) == [5, 10, 11, 9, 11, 4, 8, 14, 1, 1]


def test_an_empty_document_puts_every_path_on_the_first_line() -> None:
    assert lines_of("", None, [("a",), ("b", 1)]) == [1, 1]
    assert lines_of("# nothing\n", None, []) == []


def test_the_same_path_twice_and_a_path_through_an_alias() -> None:
    text = "base: &b {x: 1,\n  y: 2}\nuse:\n  *b\n"
    data = yaml_data.load(text)
    assert lines_of(text, data, [("base", "y"), ("base", "y"), ("use", "y")]) == [2, 2, 3]  # an alias ends the way: its key's line
