"""bcd.yaml_lines: the line of many paths in one walk of the node tree."""

from __future__ import annotations

import textwrap

from bcd import yaml_data
from bcd.yaml_lines import lines_of

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
    root = yaml_data.compose(TEXT)
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
    assert lines_of(root, paths) == [5, 10, 11, 9, 11, 4, 8, 14, 1, 1]


def test_without_a_tree_every_path_is_on_the_first_line() -> None:
    assert lines_of(None, [("a",), ("b", 1)]) == [1, 1]


def test_the_same_path_twice_and_paths_through_aliases() -> None:
    text = "base: &b {x: 1,\n  y: 2}\nuse: *b\n"
    root = yaml_data.compose(text)
    assert lines_of(root, [("use", "y"), ("use", "y"), ("base", "x")]) == [2, 2, 1]
