"""YAML as configs use it: safe types only, no anchors or aliases, errors as a `ConfigError` naming the source.

Anchors and aliases are refused because a few hundred bytes of them expand to billions of elements
(the "billion laughs" document) in anything that walks the parsed tree, such as an error message that
shows the value. Configs are short enough to spell every value out.
"""

from __future__ import annotations

from typing import Any

import yaml

from vit_finetune.typed import ConfigError


class ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that stops at the first anchor (`&name`) or alias (`*name`)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise ConfigError(f"YAML anchors and aliases are not allowed in configs (line {mark.line + 1}, "
                              f"column {mark.column + 1})")
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document; a syntax error, an unsafe tag or an anchor is a `ConfigError` naming `source`."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
